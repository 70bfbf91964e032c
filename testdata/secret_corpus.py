"""A corpus of secrets, generated at test time: never a real credential.

Each format (a provider's token, a private-key block, a credential in context, a named value)
gives several variants: fresh random bodies of the format's shape, written in the places a
history holds them (prose, a quoted assignment, a YAML or JSON value, an added patch line, a
.env line). Used by tests/test_redact.py and benchmarks/redact.py (coverage: formats caught
out of formats tried).
"""

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

ALNUM = string.ascii_letters + string.digits
LOWER_ALNUM = string.ascii_lowercase + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
URLSAFE = ALNUM + "_-"
BASE64 = ALNUM + "+/"


@dataclass(frozen=True)
class Sample:
    """``text`` holds ``secret``; after redaction ``secret`` must be gone and ``kept`` stay."""

    format: str
    text: str
    secret: str
    kept: str = ""


def _random(rng: random.Random, alphabet: str, length: int) -> str:
    # A digit and a capital where the alphabet has them, like any random token of that length.
    body = [rng.choice(alphabet) for _ in range(length)]
    for pool in (string.digits, string.ascii_uppercase, string.ascii_lowercase):
        options = [c for c in alphabet if c in pool]
        if options and length >= 8 and not any(c in pool for c in body):
            body[rng.randrange(length)] = rng.choice(options)
    return "".join(body)


def _contexts(name: str, secret: str) -> list[str]:
    """Where a token turns up: prose, quoted code, YAML, JSON, an added patch line, .env."""
    return [
        f"Temporarily use {secret} until the vault is set up.",
        f'client = Client("{secret}")',
        f"  {name}: {secret}\n",
        f'{{"{name}": "{secret}", "region": "eu-west-1"}}',
        f"@@ -1,2 +1,3 @@\n import os\n+TOKEN = '{secret}'\n",
        f"{name.upper()}={secret}\n",
    ]


# Provider formats: name -> a function making one random token of that format.
Maker = Callable[[random.Random], str]
PROVIDERS: dict[str, Maker] = {
    "aws_akia": lambda r: "AKIA" + _random(r, UPPER_ALNUM, 16),
    "aws_asia": lambda r: "ASIA" + _random(r, UPPER_ALNUM, 16),
    "aws_aroa": lambda r: "AROA" + _random(r, UPPER_ALNUM, 16),
    "aws_aida": lambda r: "AIDA" + _random(r, UPPER_ALNUM, 16),
    "github_ghp": lambda r: "ghp_" + _random(r, ALNUM, 36),
    "github_gho": lambda r: "gho_" + _random(r, ALNUM, 36),
    "github_ghu": lambda r: "ghu_" + _random(r, ALNUM, 36),
    "github_ghs": lambda r: "ghs_" + _random(r, ALNUM, 36),
    "github_ghr": lambda r: "ghr_" + _random(r, ALNUM, 36),
    "github_fine_grained": lambda r: "github_pat_11" + _random(r, ALNUM + "_", 80),
    "gitlab_glpat": lambda r: "glpat-" + _random(r, URLSAFE, 20),
    "gitlab_gldt": lambda r: "gldt-" + _random(r, URLSAFE, 20),
    "gitlab_glrt": lambda r: "glrt-" + _random(r, URLSAFE, 20),
    "gitlab_glptt": lambda r: "glptt-" + _random(r, HEX, 40),
    "slack_bot": lambda r: (
        f"xoxb-{_random(r, string.digits, 12)}-{_random(r, string.digits, 13)}-"
        + _random(r, ALNUM, 24)
    ),
    "slack_user": lambda r: (
        f"xoxp-{_random(r, string.digits, 12)}-{_random(r, string.digits, 12)}-"
        + _random(r, ALNUM, 32)
    ),
    "slack_app": lambda r: (
        f"xapp-1-A{_random(r, UPPER_ALNUM, 10)}-{_random(r, string.digits, 13)}-"
        + _random(r, HEX, 64)
    ),
    "slack_webhook": lambda r: (
        "https://hooks.slack.com/services/T"
        + f"{_random(r, UPPER_ALNUM, 8)}/B{_random(r, UPPER_ALNUM, 8)}/{_random(r, ALNUM, 24)}"
    ),
    "slack_workflow_webhook": lambda r: (
        "https://hooks.slack.com/workflows/T"
        + f"{_random(r, UPPER_ALNUM, 8)}/A{_random(r, UPPER_ALNUM, 10)}/"
        + _random(r, string.digits, 18)
    ),
    "stripe_secret_live": lambda r: "sk_live_" + _random(r, ALNUM, 24),
    "stripe_secret_test": lambda r: "sk_test_" + _random(r, ALNUM, 24),
    "stripe_restricted": lambda r: "rk_live_" + _random(r, ALNUM, 24),
    "stripe_webhook": lambda r: "whsec_" + _random(r, ALNUM, 32),
    "google_api_key": lambda r: "AIza" + _random(r, URLSAFE, 35),
    "google_oauth": lambda r: "ya29." + _random(r, URLSAFE, 60),
    "google_client_secret": lambda r: "GOCSPX-" + _random(r, URLSAFE, 28),
    "openai_project": lambda r: "sk-proj-" + _random(r, URLSAFE, 120),
    "openai_legacy": lambda r: "sk-" + _random(r, ALNUM, 20) + "T3BlbkFJ" + _random(r, ALNUM, 20),
    "openai_service_account": lambda r: "sk-svcacct-" + _random(r, URLSAFE, 80),
    "anthropic": lambda r: "sk-ant-api03-" + _random(r, URLSAFE, 93) + "AA",
    "huggingface": lambda r: "hf_" + _random(r, string.ascii_letters, 34),
    "huggingface_org": lambda r: "api_org_" + _random(r, string.ascii_letters, 34),
    "pypi": lambda r: "pypi-AgEIcHlwaS5vcmc" + _random(r, URLSAFE, 70),
    "npm": lambda r: "npm_" + _random(r, ALNUM, 36),
    "rubygems": lambda r: "rubygems_" + _random(r, HEX, 48),
    "sendgrid": lambda r: f"SG.{_random(r, URLSAFE, 22)}.{_random(r, URLSAFE, 43)}",
    "sendinblue": lambda r: f"xkeysib-{_random(r, HEX, 64)}-{_random(r, ALNUM, 16)}",
    "mailgun": lambda r: "key-" + _random(r, LOWER_ALNUM, 32),
    "mailchimp": lambda r: _random(r, HEX, 32) + "-us" + str(r.randint(1, 21)),
    "twilio_api_key": lambda r: "SK" + _random(r, HEX, 32),
    "azure_ad_client_secret": lambda r: (
        _random(r, ALNUM, 3) + str(r.randint(0, 9)) + "Q~" + _random(r, ALNUM + "_~.-", 34)
    ),
    "digitalocean": lambda r: "dop_v1_" + _random(r, HEX, 64),
    "shopify": lambda r: "shpat_" + _random(r, HEX, 32),
    "vault": lambda r: "hvs." + _random(r, URLSAFE, 90),
    "terraform_cloud": lambda r: (
        _random(r, LOWER_ALNUM, 14) + ".atlasv1." + _random(r, LOWER_ALNUM, 67)
    ),
    "grafana_cloud": lambda r: "glc_" + _random(r, BASE64, 40) + "==",
    "grafana_service_account": lambda r: f"glsa_{_random(r, ALNUM, 32)}_{_random(r, HEX, 8)}",
    "databricks": lambda r: "dapi" + _random(r, HEX, 32),
    "linear": lambda r: "lin_api_" + _random(r, ALNUM, 40),
    "figma": lambda r: "figd_" + _random(r, URLSAFE, 40),
    "sentry_user": lambda r: "sntryu_" + _random(r, HEX, 64),
    "planetscale": lambda r: "pscale_tkn_" + _random(r, ALNUM, 43),
    "postman": lambda r: f"PMAK-{_random(r, HEX, 24)}-{_random(r, HEX, 34)}",
    "square": lambda r: "sq0atp-" + _random(r, URLSAFE, 22),
    "facebook": lambda r: "EAACEdEose0cBA" + _random(r, ALNUM, 100),
    "age": lambda r: "AGE-SECRET-KEY-1" + _random(r, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58),
    "dockerhub": lambda r: "dckr_pat_" + _random(r, URLSAFE, 27),
    "new_relic": lambda r: "NRAK-" + _random(r, UPPER_ALNUM, 27),
    "pulumi": lambda r: "pul-" + _random(r, HEX, 40),
    "typeform": lambda r: "tfp_" + _random(r, URLSAFE, 59),
    "supabase": lambda r: "sbp_" + _random(r, HEX, 40),
    "prefect": lambda r: "pnu_" + _random(r, ALNUM, 36),
    "readme": lambda r: "rdme_" + _random(r, LOWER_ALNUM, 70),
    "doppler": lambda r: "dp.pt." + _random(r, ALNUM, 43),
    "dynatrace": lambda r: f"dt0c01.{_random(r, UPPER_ALNUM, 24)}.{_random(r, UPPER_ALNUM, 64)}",
    "atlassian": lambda r: "ATATT3" + _random(r, URLSAFE, 186),
    "alibaba": lambda r: "LTAI" + _random(r, ALNUM, 20),
    "telegram_bot": lambda r: f"{r.randint(10**8, 10**9)}:AA{_random(r, URLSAFE, 33)}",
    "discord_webhook": lambda r: (
        "https://discord.com/api/webhooks/"
        + f"{_random(r, string.digits, 18)}/{_random(r, URLSAFE, 68)}"
    ),
    "teams_webhook": lambda r: (
        "https://acme.webhook.office.com/webhookb2/"
        + f"{_random(r, HEX, 8)}-{_random(r, HEX, 4)}@{_random(r, HEX, 8)}/IncomingWebhook/"
        + _random(r, HEX, 32)
    ),
    "artifactory": lambda r: "AKCp" + _random(r, ALNUM, 69),
    "mapbox_secret": lambda r: (
        "sk.eyJ1Ijoi" + _random(r, ALNUM, 60) + "." + _random(r, URLSAFE, 22)
    ),
    "onepassword": lambda r: "ops_eyJ" + _random(r, BASE64, 250),
    "flutterwave": lambda r: f"FLWSECK_TEST-{_random(r, 'abcdefgh0123456789', 32)}-X",
    "easypost": lambda r: "EZAK" + _random(r, ALNUM, 54),
    "shippo": lambda r: "shippo_live_" + _random(r, HEX, 40),
    "duffel": lambda r: "duffel_test_" + _random(r, URLSAFE, 43),
    "frameio": lambda r: "fio-u-" + _random(r, URLSAFE, 64),
    "notion": lambda r: "ntn_" + _random(r, string.digits, 11) + _random(r, ALNUM, 35),
    "jwt": lambda r: (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        + "eyJ"
        + _random(r, URLSAFE, 40)
        + "."
        + _random(r, URLSAFE, 43)
    ),
}

# Formats added after the corpus was first generated: drawn from a stream of their own, so
# every sample above keeps its value.
LATER_PROVIDERS: dict[str, Maker] = {
    "clojars": lambda r: "CLOJARS_" + _random(r, LOWER_ALNUM, 60),
    "harness": lambda r: (
        f"pat.{_random(r, URLSAFE, 22)}.{_random(r, HEX, 24)}.{_random(r, ALNUM, 20)}"
    ),
}

PRIVATE_KEY_TYPES = ("RSA ", "OPENSSH ", "EC ", "DSA ", "ENCRYPTED ", "", "PGP ")


def private_key(rng: random.Random, kind: str) -> str:
    block = "PRIVATE KEY BLOCK" if kind == "PGP " else "PRIVATE KEY"
    label = "" if kind == "PGP " else kind
    lines = [_random(rng, BASE64, 64) for _ in range(4)] + [_random(rng, BASE64, 20) + "=="]
    return (
        f"-----BEGIN {label}{block}-----\n" + "\n".join(lines) + f"\n-----END {label}{block}-----"
    )


def _password(rng: random.Random, length: int = 14) -> str:
    return _random(rng, ALNUM + "!#%^*-_", length)


def _contextual(rng: random.Random) -> list[Sample]:
    """Credentials recognised by where they stand, not by a prefix."""
    samples: list[Sample] = []
    for _ in range(3):
        word = _password(rng)
        for scheme, user in (
            ("postgres", "app"),
            ("mysql", "root"),
            ("redis", ""),
            ("amqp", "guest"),
            ("mongodb+srv", "admin"),
            ("https", "deploy"),
        ):
            host = rng.choice(["db.example.com", "localhost:5432", "cache", "10.0.0.7"])
            url = f"{scheme}://{user}:{word}@{host}/main"
            samples.append(Sample(f"url_password_{scheme}", f'DATABASE_URL="{url}"', word, "@"))
        samples += [
            Sample("curl_user", f"curl -u admin:{word} https://api.example.com/v1", word),
            Sample("curl_user", f"curl --user=ci:{word} -X POST https://x.example.com", word),
            Sample("curl_user", f"+  curl -s -u 'ops:{word}' \"$URL\"\n", word),
        ]
        token = _random(rng, URLSAFE + ".", 40)
        basic = _random(rng, ALNUM, 20) + "="
        samples += [
            Sample("auth_bearer", f'curl -H "Authorization: Bearer {token}" $API', token),
            Sample("auth_bearer", f"headers = {{'Authorization': 'Bearer {token}'}}", token),
            Sample("auth_bearer", f"GET / HTTP/1.1\nAuthorization: bearer {token}\n", token),
            Sample("auth_basic", f"Authorization: Basic {basic}", basic),
            Sample(
                "auth_basic", "Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="
            ),
            Sample("docker_auth", f'{{"auths": {{"ghcr.io": {{"auth": "{basic}"}}}}}}', basic),
        ]
        key = _random(rng, BASE64, 86) + "=="
        samples.append(
            Sample(
                "azure_storage_key",
                "DefaultEndpointsProtocol=https;AccountName=acme;"
                f"AccountKey={key};EndpointSuffix=core.windows.net",
                key,
            )
        )
        okta = _random(rng, URLSAFE, 42)
        samples.append(Sample("okta_token", f"Authorization: SSWS {okta}", okta))
    return samples


# Named values: (format, line template with {v}); the value is random.
NAMED = [
    ("password_assignment", 'DB_PASSWORD = "{v}"'),
    ("password_yaml", "  password: {v}\n"),
    ("passwd", "passwd={v}"),
    ("passphrase", 'ssh_passphrase: "{v}"'),
    ("pwd", "MYSQL_PWD={v}"),
    ("credentials", 'credentials = "{v}"'),
    ("credential", "AZURE_CREDENTIAL: '{v}'"),
    ("secret", 'client_secret = "{v}"'),
    ("token", "'auth_token' => '{v}'"),
    ("api_key", 'api_key: "{v}"'),
    ("access_key", "ACCESS_KEY={v}"),
    ("private_key_value", 'private_key = "{v}"'),
    ("walrus", "token := '{v}'"),
    ("go_short_assignment", 'apiToken := "{v}"'),
    ("r_assignment", 'secret <- "{v}"'),
    ("secret_word_in_middle", "SECRET_KEY_BASE={v}"),
    ("secret_word_in_middle_quoted", 'API_KEY_VALUE = "{v}"'),
    ("password_prose", "The staging password is {v} until Friday."),
    ("password_prose_colon", "password was: {v}"),
    ("cli_flag", "mysql --password {v} -h db"),
    ("cli_flag_token", "deploy --token {v}"),
]
# .env values of letters only: a word in code would be an identifier, in .env it is the value.
ENV_LETTERS = ["DB_PASSWORD={v}", "export SMTP_PASSWORD={v}", "+APP_SECRET={v}"]


def _provider_samples(
    rng: random.Random, providers: dict[str, Maker], variants: int
) -> list[Sample]:
    samples = []
    for name, make in providers.items():
        for context in _contexts(name, "{secret}")[:variants] + _contexts(name, "{secret}")[-2:]:
            secret = make(rng)
            samples.append(Sample(name, context.replace("{secret}", secret), secret))
    return samples


def _putty_samples(rng: random.Random) -> list[Sample]:
    """A PuTTY key file, one added in a patch, and one indented in a patch."""
    samples = []
    for margin in ("", "+", "+    "):
        secret = _random(rng, BASE64, 64)
        lines = (
            "PuTTY-User-Key-File-3: ssh-ed25519",
            "Encryption: none",
            "Private-Lines: 1",
            secret,
            "Private-MAC: " + _random(rng, HEX, 64),
        )
        text = "".join(f"{margin}{line}\n" for line in lines)
        samples.append(Sample("putty_private_key", text, secret))
    return samples


def corpus(seed: int = 0, variants: int = 3) -> list[Sample]:
    """Every format in several variants (the same seed gives the same corpus)."""
    rng = random.Random(seed)
    samples = _provider_samples(rng, PROVIDERS, variants)
    for kind in PRIVATE_KEY_TYPES:
        name = "private_key_" + (kind.strip().lower() or "pkcs8")
        for margin in ("", "+", "+    "):  # a file, a patch, an indented YAML block in a patch
            key = private_key(rng, kind)
            text = "\n".join(margin + line for line in key.splitlines())
            samples.append(Sample(name, f"@@ -0,0 +1,7 @@\n{text}\n", key.splitlines()[2]))
    samples += _contextual(rng)
    for name, template in NAMED:
        for _ in range(variants):
            value = _password(rng)
            samples.append(Sample(name, template.replace("{v}", value), value))
    for template in ENV_LETTERS:
        value = _random(rng, string.ascii_letters, 18)
        samples.append(Sample("env_letters_only", template.replace("{v}", value), value))
    later = random.Random(seed + 1)
    return samples + _provider_samples(later, LATER_PROVIDERS, variants) + _putty_samples(later)


def formats(samples: list[Sample]) -> list[str]:
    return sorted({sample.format for sample in samples})
