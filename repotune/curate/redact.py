"""Secret and e-mail redaction: nothing that looks like a credential reaches a tokenizer.

A model fine-tuned on a history memorises what it sees, and can repeat a leaked key verbatim.
Every subject, body, path, old path and patch is therefore passed through :class:`Redactor`,
which swaps each finding for a typed placeholder (``<KEY>``, ``<TOKEN>``, ``<PRIVATE_KEY>``,
``<JWT>``, ``<PASSWORD>``, ``<SECRET>``, ``<EMAIL>``) so the model still learns that *a* secret
goes there, and counts what it replaced by kind.

What it finds, modelled on gitleaks' default rules and detect-secrets' plugins (our own
patterns, written from the providers' documented token formats):

* **provider formats** with a distinctive prefix (:data:`PROVIDER_RULES`: AWS, GitHub, GitLab,
  Slack, Stripe, Google, OpenAI, Anthropic, Hugging Face, PyPI, npm, SendGrid, Twilio, Azure,
  DigitalOcean, Shopify, Vault, Grafana, Databricks and more), private-key blocks of every
  kind, JWTs;
* **credentials in context**: passwords in URLs (``postgres://app:PASS@host``,
  ``redis://:PASS@host``), ``curl -u user:pass``, ``Authorization: Bearer/Basic`` values,
  docker ``"auth":`` entries;
* **named values**: an assignment (``=``, ``:``, ``=>``, ``:=``, ``<-``) whose key names a
  secret (``DB_PASSWORD``, ``client_secret``, ``SECRET_KEY_BASE``), ``--password VALUE``, and
  a password in prose: after a password word (``password``, ``passwd``, ``passphrase``,
  ``pwd``, and as whole words ``pw``, ``pass``, ``passcode``), an optional qualifier ("for the
  staging db") and any run of links ("is", "was", "is now", "set to", ``:``, ``=``, ``->``) or
  none ("pass X", where code-like values such as flags, paths and hex are left alone), the
  value, quoted or not. The value must be random enough (Shannon entropy at
  least ``entropy_threshold`` bits per character, at least ``min_secret_length`` long) and,
  unquoted in code, not a bare identifier. In a ``.env`` line (``NAME=value``, upper-case name)
  a letters-only value counts too. A short value that mixes letters and digits needs less:
  see :func:`required_entropy`.

Why not flag every high-entropy string, as detect-secrets can: in a code history they are
mostly hashes, lockfile checksums and UUIDs, which a model should see. Those are left alone: a
hex digest next to ``sha256=``, a git sha, a UUID or ``integrity: sha512-...`` matches no
provider format, and a named value is skipped when its key names a hash (``password_sha256``)
or the value is a UUID, a checksum or a template (``${{ secrets.X }}``).

Speed: one Aho-Corasick pass (pyahocorasick, C) over a lower-cased copy finds every prefix and
secret word at once; each hit is then checked by a regular expression anchored where it was
found. No regular expression scans the whole text, so adding a format costs nearly nothing.
"""

import functools
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ahocorasick

_B = r"[A-Za-z0-9_-]"  # the body characters of most tokens
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_HEX = "0123456789abcdefABCDEF"


@dataclass(frozen=True)
class Rule:
    """One provider format.

    ``needles``: lower-case substrings, one of which starts every match (after ``left``).
    ``pattern``: matched at the needle, after stepping left over characters in ``left`` (for
    formats whose distinctive part is not at their start). ``boundary``: the match must not
    follow a letter, digit or underscore. With a group named ``v`` only it is replaced.
    """

    name: str
    kind: str
    placeholder: str
    needles: tuple[str, ...]
    pattern: str
    left: str = ""
    boundary: bool = True
    flags: int = 0


def _rule(name: str, kind: str, placeholder: str, needles: Any, pattern: str, **extra: Any):
    needles = (needles,) if isinstance(needles, str) else tuple(needles)
    return Rule(name, kind, placeholder, needles, pattern, **extra)


_AWS_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "ANPA", "ANVA", "AROA")
_GITLAB_PREFIXES = ("glpat-", "gldt-", "glrt-", "glptt-", "glft-", "glcbt-", "glimt-", "glsoat-")
_GITHUB_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")

PROVIDER_RULES: tuple[Rule, ...] = (
    # The whole block, across patch lines; a block cut off by patch truncation is redacted to
    # the end of the text rather than leaking its first lines. RSA, DSA, EC, OPENSSH, ENCRYPTED,
    # PKCS#8 and PGP ("PRIVATE KEY BLOCK") alike.
    _rule(
        "private_key",
        "private_key",
        "<PRIVATE_KEY>",
        "-----begin",
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|.*\Z)",
        flags=re.DOTALL,
        boundary=False,
    ),
    _rule(
        "putty_private_key",
        "private_key",
        "<PRIVATE_KEY>",
        "putty-user-key-file-",
        r"PuTTY-User-Key-File-\d+:.*?(?:Private-MAC: [0-9a-f]+|\Z)",
        flags=re.DOTALL,
    ),
    _rule("jwt", "jwt", "<JWT>", "eyj", r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[\w-]*"),
    _rule(
        "aws_access_key",
        "aws_access_key",
        "<KEY>",
        [p.lower() for p in _AWS_PREFIXES] + ["a3t"],
        rf"(?:{'|'.join(_AWS_PREFIXES)}|A3T[A-Z0-9])[A-Z0-9]{{16}}(?![A-Za-z0-9])",
    ),
    _rule(
        "github_token",
        "github_token",
        "<TOKEN>",
        [*_GITHUB_PREFIXES, "github_pat_"],
        r"(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])",
    ),
    _rule(
        "gitlab_token",
        "gitlab_token",
        "<TOKEN>",
        _GITLAB_PREFIXES,
        rf"(?:{'|'.join(_GITLAB_PREFIXES)}){_B}{{20,}}",
    ),
    _rule(
        "slack_token",
        "slack_token",
        "<TOKEN>",
        ["xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "xoxe-", "xapp-"],
        r"(?:xox[abposre](?:\.xox[abposre])?-[A-Za-z0-9-]{10,}|xapp-\d-[A-Za-z0-9-]{10,})",
    ),
    _rule(
        "slack_webhook",
        "slack_token",
        "<TOKEN>",
        "hooks.slack.com/",
        r"(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,}",
        boundary=False,
    ),
    _rule(
        "stripe_key",
        "stripe_key",
        "<TOKEN>",
        ["sk_live_", "sk_test_", "rk_live_", "rk_test_"],
        r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}(?![A-Za-z0-9])",
    ),
    _rule("stripe_webhook_secret", "stripe_key", "<TOKEN>", "whsec_", r"whsec_[A-Za-z0-9]{24,}"),
    _rule("google_api_key", "provider_token", "<KEY>", "aiza", rf"AIza{_B}{{35}}(?!{_B})"),
    _rule("google_oauth_token", "provider_token", "<TOKEN>", "ya29.", rf"ya29\.{_B}{{20,}}"),
    _rule("google_client_secret", "provider_token", "<SECRET>", "gocspx-", rf"GOCSPX-{_B}{{28}}"),
    _rule(
        "anthropic_key",
        "provider_token",
        "<KEY>",
        "sk-ant-",
        rf"sk-ant-(?:api|admin|sid)\d\d-{_B}{{20,}}",
    ),
    _rule(
        "openai_key",
        "provider_token",
        "<KEY>",
        "sk-",
        r"sk-(?:(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{20,}"
        r"|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}|[A-Za-z0-9]{48}(?![A-Za-z0-9]))",
    ),
    _rule(
        "huggingface_token",
        "provider_token",
        "<TOKEN>",
        ["hf_", "api_org_"],
        r"(?:hf|api_org)_[A-Za-z0-9]{30,}(?![A-Za-z0-9])",
    ),
    _rule("pypi_token", "provider_token", "<TOKEN>", "pypi-ag", rf"pypi-Ag{_B}{{50,}}"),
    _rule("npm_token", "provider_token", "<TOKEN>", "npm_", r"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])"),
    _rule("rubygems_key", "provider_token", "<KEY>", "rubygems_", r"rubygems_[a-f0-9]{48}"),
    _rule("clojars_token", "provider_token", "<TOKEN>", "clojars_", r"CLOJARS_[a-z0-9]{60}"),
    _rule("sendgrid_key", "provider_token", "<KEY>", "sg.", rf"SG\.{_B}{{22}}\.{_B}{{43}}(?!{_B})"),
    _rule(
        "sendinblue_key",
        "provider_token",
        "<KEY>",
        "xkeysib-",
        r"xkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}",
    ),
    _rule("mailgun_key", "provider_token", "<KEY>", "key-", r"key-[0-9a-zA-Z]{32}(?![A-Za-z0-9])"),
    _rule(
        "mailchimp_key",
        "provider_token",
        "<KEY>",
        "-us",
        r"[0-9a-f]{32}-us\d{1,2}(?![0-9])",
        left=_HEX,
    ),
    _rule("twilio_key", "provider_token", "<KEY>", "sk", r"SK[0-9a-fA-F]{32}(?![A-Za-z0-9])"),
    _rule(
        "azure_storage_key",
        "provider_token",
        "<KEY>",
        ["accountkey=", "sharedaccesskey="],
        r"(?:AccountKey|SharedAccessKey)=(?P<v>[A-Za-z0-9+/]{20,}={0,2})",
        flags=re.IGNORECASE,
    ),
    _rule(
        "azure_ad_client_secret",
        "provider_token",
        "<SECRET>",
        "q~",
        r"[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])",
        left=_ALNUM + "_~.",
    ),
    _rule(
        "digitalocean_token",
        "provider_token",
        "<TOKEN>",
        ["dop_v1_", "doo_v1_", "dor_v1_"],
        r"do[por]_v1_[a-f0-9]{64}",
    ),
    _rule(
        "shopify_token",
        "provider_token",
        "<TOKEN>",
        ["shpat_", "shpca_", "shppa_", "shpss_"],
        r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",
    ),
    _rule("vault_token", "provider_token", "<TOKEN>", ["hvs.", "hvb."], rf"hv[sb]\.{_B}{{24,}}"),
    _rule(
        "terraform_token",
        "provider_token",
        "<TOKEN>",
        ".atlasv1.",
        r"[a-z0-9]{14}\.atlasv1\.[a-z0-9_=-]{60,70}",
        left=_ALNUM,
    ),
    _rule(
        "grafana_token",
        "provider_token",
        "<TOKEN>",
        ["glc_", "glsa_"],
        r"(?:glc_[A-Za-z0-9+/]{32,}={0,2}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8})",
    ),
    _rule("databricks_token", "provider_token", "<TOKEN>", "dapi", r"dapi[a-f0-9]{32}(?:-\d)?"),
    _rule("linear_key", "provider_token", "<KEY>", "lin_api_", r"lin_api_[A-Za-z0-9]{40}"),
    _rule("figma_token", "provider_token", "<TOKEN>", "figd_", rf"figd_{_B}{{40}}"),
    _rule(
        "sentry_token",
        "provider_token",
        "<TOKEN>",
        ["sntrys_", "sntryu_"],
        r"(?:sntrys_eyJ[A-Za-z0-9+/=_-]{60,}|sntryu_[a-f0-9]{64})",
    ),
    _rule(
        "planetscale_token",
        "provider_token",
        "<TOKEN>",
        ["pscale_tkn_", "pscale_pw_", "pscale_oauth_"],
        r"pscale_(?:tkn|pw|oauth)_[A-Za-z0-9=\-_.]{32,64}",
    ),
    _rule("postman_key", "provider_token", "<KEY>", "pmak-", r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}"),
    _rule(
        "square_token",
        "provider_token",
        "<TOKEN>",
        ["sq0atp-", "sq0csp-"],
        rf"sq0(?:atp|csp)-{_B}{{22,43}}",
    ),
    _rule("facebook_token", "provider_token", "<TOKEN>", "eaa", r"EAA[A-Za-z0-9]{60,}"),
    _rule(
        "age_secret_key",
        "provider_token",
        "<KEY>",
        "age-secret-key-1",
        r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}",
    ),
    _rule("dockerhub_token", "provider_token", "<TOKEN>", "dckr_pat_", rf"dckr_pat_{_B}{{27,}}"),
    _rule(
        "new_relic_key",
        "provider_token",
        "<KEY>",
        ["nrak-", "nrjs-", "nrii-"],
        r"NR(?:AK|JS|II)-[A-Za-z0-9]{27,32}",
    ),
    _rule("pulumi_token", "provider_token", "<TOKEN>", "pul-", r"pul-[a-f0-9]{40}"),
    _rule("typeform_token", "provider_token", "<TOKEN>", "tfp_", rf"tfp_{_B}{{59}}"),
    _rule("supabase_token", "provider_token", "<TOKEN>", "sbp_", r"sbp_[a-f0-9]{40}"),
    _rule("prefect_key", "provider_token", "<KEY>", "pnu_", r"pnu_[A-Za-z0-9]{36}"),
    _rule("readme_key", "provider_token", "<KEY>", "rdme_", r"rdme_[a-z0-9]{70}"),
    _rule("doppler_token", "provider_token", "<TOKEN>", "dp.pt.", r"dp\.pt\.[A-Za-z0-9]{43}"),
    _rule(
        "dynatrace_token",
        "provider_token",
        "<TOKEN>",
        "dt0c01.",
        r"dt0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64}",
    ),
    _rule("atlassian_token", "provider_token", "<TOKEN>", "atatt3", r"ATATT3[A-Za-z0-9_\-=]{150,}"),
    _rule("alibaba_key", "provider_token", "<KEY>", "ltai", r"LTAI[A-Za-z0-9]{20}(?![A-Za-z0-9])"),
    _rule("okta_token", "provider_token", "<TOKEN>", "ssws ", rf"SSWS (?P<v>{_B}{{40,}})"),
    _rule(
        "telegram_bot_token",
        "provider_token",
        "<TOKEN>",
        ":aa",
        r"[0-9]{8,10}:AA[A-Za-z0-9_-]{33}(?![A-Za-z0-9_-])",
        left="0123456789",
    ),
    _rule(
        "discord_webhook",
        "provider_token",
        "<TOKEN>",
        ["discord.com/api/webhooks/", "discordapp.com/api/webhooks/"],
        r"discord(?:app)?\.com/api/webhooks/\d+/[\w-]{50,}",
        boundary=False,
    ),
    _rule(
        "teams_webhook",
        "provider_token",
        "<TOKEN>",
        ".webhook.office.com/",
        r"[a-z0-9-]+\.webhook\.office\.com/webhookb2/[\w@/-]{40,}",
        left=_ALNUM + "-",
    ),
    _rule(
        "artifactory_key",
        "provider_token",
        "<KEY>",
        ["akcp", "cmvmdgtuojaxoj"],
        r"(?:AKCp[A-Za-z0-9]{60,}|cmVmdGtuOjAxOj[A-Za-z0-9]{50,})",
    ),
    _rule("mapbox_token", "provider_token", "<TOKEN>", "sk.eyj", r"sk\.eyJ[A-Za-z0-9._-]{40,}"),
    _rule(
        "harness_token",
        "provider_token",
        "<TOKEN>",
        "pat.",
        rf"pat\.{_B}{{22}}\.[a-f0-9]{{24}}\.[A-Za-z0-9]{{20}}",
    ),
    _rule(
        "onepassword_token",
        "provider_token",
        "<TOKEN>",
        "ops_eyj",
        r"ops_eyJ[A-Za-z0-9+/=_-]{100,}",
    ),
    _rule(
        "flutterwave_key",
        "provider_token",
        "<KEY>",
        ["flwseck_test-", "flwseck-"],
        r"FLWSECK(?:_TEST)?-[a-h0-9]{32}-X",
    ),
    _rule("easypost_key", "provider_token", "<KEY>", ["ezak", "eztk"], r"EZ[AT]K[A-Za-z0-9]{54}"),
    _rule(
        "shippo_token",
        "provider_token",
        "<TOKEN>",
        "shippo_",
        r"shippo_(?:live|test)_[a-f0-9]{40}",
    ),
    _rule(
        "duffel_token",
        "provider_token",
        "<TOKEN>",
        "duffel_",
        r"duffel_(?:test|live)_[A-Za-z0-9_=-]{43}",
    ),
    _rule("frameio_token", "provider_token", "<TOKEN>", "fio-u-", r"fio-u-[A-Za-z0-9_=-]{64}"),
    _rule(
        "notion_token",
        "provider_token",
        "<TOKEN>",
        ["ntn_", "secret_"],
        r"(?:ntn_[0-9]{11}[A-Za-z0-9]{35}|secret_[A-Za-z0-9]{43})(?![A-Za-z0-9])",
    ),
    # Credentials in context: only the secret part goes.
    _rule(
        "url_password",
        "password",
        "<PASSWORD>",
        "://",
        r"://[^\s/:@\"'<>]*:(?P<v>[^\s/@\"'<>]+)@[A-Za-z0-9\[]",
        boundary=False,
    ),
    _rule(
        "curl_user",
        "password",
        "<PASSWORD>",
        "curl",
        r"curl\b[^\n]*?\s(?:-u|--user)(?:\s+|=)[\"']?[^\s\"':]*:(?P<v>[^\s\"']+)",
    ),
    _rule(
        "auth_header",
        "secret",
        "<SECRET>",
        ["bearer ", "basic ", "bearer\t", "basic\t"],
        r"(?:bearer|basic)[ \t]+(?P<v>[A-Za-z0-9._~+/=-]{8,})(?![A-Za-z0-9._~+/=-])",
        flags=re.IGNORECASE,
    ),
    _rule(
        "docker_auth",
        "secret",
        "<SECRET>",
        ['"auth"', '"identitytoken"'],
        r"\"(?:auth|identitytoken)\"\s*:\s*\"(?P<v>[A-Za-z0-9+/=._-]{8,})\"",
        boundary=False,
    ),
)
# Rules whose value is tested like a named value (random enough, not a template).
_CONTEXT_RULES = frozenset({"url_password", "curl_user", "auth_header", "docker_auth"})

# Named values. The AC pass finds the secret word; the key around it is read from the
# lower-cased text: letters, digits, _ and - to its left (a qualifier for a bare `key`, the
# whole name for .env lines); to its right at most a few suffixes that keep it a secret
# (`SECRET_KEY_BASE`), never ones that make it something else (`password_sha256`, `token_url`).
_SECRET_WORDS = (
    *("password", "passwd", "passphrase", "pwd", "secret", "token", "credential", "credentials"),
    "key",
)
_PASSWORD_WORDS = frozenset({"password", "passwd", "passphrase", "pwd"})
_AFTER_WORD = re.compile(
    r"(?:[_-](?:key|base|value|str|string|raw|plain|plaintext|b64|base64"
    r"|bytes|data|text|access|secret|token))*"
    r"(?![a-z0-9_])[\"']?\s*(?P<op>=>|:=|<-|=(?!=)|:(?![:/]))[ \t]*"
    r"(?:\"(?P<dq>[^\"\n]*)\"|'(?P<sq>[^'\n]*)'|(?P<bare>[^\s\"'`,;()\[\]{}<>]+)(?=[\s\"',;)\]}]|\Z))"
)
# A password in prose: after the password word, an optional "for/of/on the staging db", then
# any run of links ("is", "was", "is now", "set to", ":", "=", "->"), or none at all ("pass
# X"), then the value, quoted or not, up to the end of its word. The value is then judged as a
# named value is (random enough; unquoted, not an identifier). Words that are short or common
# as verbs (pw, pass) count only as whole words.
_PROSE_LINKS = (
    "is|was|are|were|now|set|changed|reset|updated|to|became|becomes|remains|will|be|been|has"
)
_PROSE_LINK = rf"(?:[ \t]*(?:=>|->|:=|=|:)|[ \t]+(?:{_PROSE_LINKS})(?![a-z0-9_]))"
_PROSE = re.compile(
    rf"(?:[ \t]+(?:for|of|on|in|at)(?:[ \t]+(?!(?:{_PROSE_LINKS})\b)[a-z0-9_.@/-]+){{1,3}}?"
    rf"(?={_PROSE_LINK}))?"  # a qualifier only before a link: "password for staging is X"
    rf"(?P<link>{_PROSE_LINK}*)"
    r"[ \t]*(?<=[\s=:>])(?P<quote>[\"'`]?)(?P<bare>[^\s\"'`,;()\[\]{}<>]+?)(?P=quote)"
    r"(?=[.,;:!?)\]]*(?:\s|\Z))"
)
_PROSE_WORDS = ("pw", "pass", "passcode")  # found as whole words only, and only in prose
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
# Unlinked ("pass X"), a value must also not look like what that verb is followed by in a
# commit message: a flag, a path, a version, an attribute, a call or an expression, a git sha
# or hex digest, a 0x number; and it must mix letters and digits.
_CODE_LIKE = re.compile(r"^-|[./*=]|^(?:0x)?[0-9a-f]+$")
_FLAG_VALUE = re.compile(r"[ \t]+[\"']?(?P<bare>[^\s\"'`]+?)[\"']?(?=\s|\Z)")
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
_KEY_QUALIFIER = re.compile(
    r"(?:api|access|auth|private|secret|signing|encryption|master|client|account|app|consumer"
    r"|shared|storage|license|subscription|service|session|deploy)[_-]?\Z"
)
_ENV_LINE = re.compile(r"[+ -]?[ \t]*(?:export[ \t]+)?[A-Z][A-Z0-9_]*=[^\s\"']+[ \t]*\Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_CHECKSUM = re.compile(r"(?i)(?:sha(?:1|224|256|384|512)?|md5)[-:=][A-Za-z0-9+/=]+")
_TEMPLATE = re.compile(r"^\$|\{\{|\$\{|^%\(|^%s$|^<.*>$|^\*+$|^\{[^}]*\}$|^x+$")
_NOT_IDENTIFIER = re.compile(r"[0-9]|[^A-Za-z0-9_.]")
# Short named values (see required_entropy): a value qualifies when it holds a letter and a
# digit; its alphabet is hex when it is all hex digits of one case, else the union of the
# character classes it uses.
_LETTER_AND_DIGIT = re.compile(r"(?=.*[A-Za-z])(?=.*[0-9])")
_HEX_VALUE = re.compile(r"[0-9a-f]+|[0-9A-F]+")
_CLASS_SIZES = ((str.islower, 26), (str.isupper, 26), (str.isdigit, 10))
_SYMBOLS = 32  # ASCII punctuation
SHORT_VALUE_RATIO = 0.8
SHORT_VALUE_LENGTH = 64
_PLACEHOLDER_WORDS = frozenset(
    {"password", "pass", "passwd", "pwd", "secret", "token", "pw", "xxx", "changeme", "user"}
)

# E-mail: found from each "@", checked against a known top-level domain so code like
# `q@k.transpose(-2, -1)`, `assets/logo@2x.png` or `x@self.weight` is not an address.
_AT_DOMAIN = re.compile(r"@[A-Za-z0-9-]+\.[A-Za-z]")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_TLDS = (
    "com|org|net|edu|gov|mil|int|io|dev|app|ai|co|info|biz|me|tech|xyz|cloud|email|online|site"
    "|name|pro|mobi|aero|museum|travel|jobs|test|example|invalid|local|localhost|internal|lan"
    "|[a-z]{2}"
)
_EMAIL_AT = re.compile(
    rf"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*?\.(?i:{_TLDS})(?![A-Za-z0-9-]|\.[A-Za-z0-9-]*[A-Za-z])"
)
_EMAIL_AT_FILE = re.compile(rf"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*?\.(?i:{_TLDS})(?=\.[a-z0-9]+\b)")
# Not personal data: the ssh user of git hosting (git@github.com:org/repo.git).
_EMAIL_KEEP_LOCAL = frozenset({"git"})

KINDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        [*(rule.kind for rule in PROVIDER_RULES), "provider_token", "password", "secret", "email"]
    )
)


def shannon_entropy(text: str) -> float:
    """Shannon entropy of ``text`` in bits per character: H = -sum p(c) log2 p(c).

    A random 16-character alphanumeric secret scores about 3.5-4; words and repeated
    placeholders (``changeme``, ``xxxxxxxx``) score under 3. The maximum is log2(len(text)),
    so a short value cannot pass a high threshold: :func:`required_entropy` allows for that.
    """
    if not text:
        return 0.0
    length = len(text)
    return max(0.0, -sum(n / length * math.log2(n / length) for n in Counter(text).values()))


def alphabet_size(value: str) -> int:
    """The alphabet a random ``value`` would be drawn from: 16 for hex digits of one case, else
    26 per letter case, 10 for digits and 32 for punctuation, for each class it uses."""
    if _HEX_VALUE.fullmatch(value):
        return 16
    size = sum(n for has, n in _CLASS_SIZES if any(has(char) for char in value))
    return size + (_SYMBOLS if any(not char.isalnum() for char in value) else 0)


@functools.cache
def random_entropy(length: int, alphabet: int) -> float:
    """Expected Shannon entropy (bits per character) of a uniformly random string of
    ``length`` characters from ``alphabet`` symbols.

    By linearity, E[H] = k * sum_j P(j) (j/n) log2(n/j), with P(j) = Binomial(n, 1/k) the
    chance that one symbol occurs j times. It is far below log2(k) for short strings (3.18 for
    10 alphanumerics, whose alphabet gives 5.95) and approaches it as they grow.
    """
    p = 1 / alphabet
    return alphabet * sum(
        math.comb(length, j) * p**j * (1 - p) ** (length - j) * j / length * math.log2(length / j)
        for j in range(1, length + 1)
    )


def required_entropy(value: str, threshold: float) -> float:
    """Bits per character a value named as a secret must reach: ``threshold``, or less when the
    value is short and mixes letters and digits.

    A fixed per-character threshold is biased against short values: 10 random alphanumerics
    score 3.18 on average, and a fixed 3.0 lets 13% of them through (38% at 8 characters, 15%
    of 16 random hex digits). Such a value need only reach ``SHORT_VALUE_RATIO`` of what a random
    string of its length and alphabet scores on average (:func:`random_entropy`), which under
    0.5% of random values miss. Words and placeholders (``changeme``, ``xxxxxxxx``,
    ``<your-token>``) hold no digit, and identifiers are kept out by the bare-value rule, so
    they still face the fixed threshold.
    """
    if len(value) > SHORT_VALUE_LENGTH or not _LETTER_AND_DIGIT.match(value):
        return threshold
    return min(threshold, SHORT_VALUE_RATIO * random_entropy(len(value), alphabet_size(value)))


@dataclass(frozen=True)
class RedactSettings:
    """The ``curate.redact`` config section (defaults live in config/schema.yaml)."""

    emails: bool
    entropy_threshold: float
    min_secret_length: int

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> "RedactSettings":
        return cls(**section)


@functools.cache
def _automaton() -> tuple[Any, tuple[tuple[Rule, re.Pattern[str]], ...]]:
    """Every needle and secret word in one Aho-Corasick automaton: needle -> handlers."""
    compiled = tuple((rule, re.compile(rule.pattern, rule.flags)) for rule in PROVIDER_RULES)
    handlers: dict[str, list[int]] = {}
    for index, (rule, _) in enumerate(compiled):
        for needle in rule.needles:
            handlers.setdefault(needle, []).append(index)
    for word in _SECRET_WORDS:
        handlers.setdefault(word, []).append(-1)  # -1: a named value
    for word in _PROSE_WORDS:
        handlers.setdefault(word, []).append(-2)  # -2: a password word in prose only
    automaton = ahocorasick.Automaton()
    for needle, indices in handlers.items():
        automaton.add_word(needle, (len(needle), tuple(indices)))
    automaton.make_automaton()
    return automaton, compiled


class Redactor:
    """Replaces secrets in text by typed placeholders and counts them by kind.

    One instance serves a whole curation run; ``counts`` accumulates over every call.
    """

    def __init__(self, settings: RedactSettings) -> None:
        self.settings = settings
        self.counts: Counter[str] = Counter({kind: 0 for kind in KINDS})
        self._automaton, self._rules = _automaton()

    def redact(self, text: str) -> str:
        """``text`` with every finding replaced by its placeholder."""
        if not text:
            return text
        found = list(self._findings(text))
        if not found:
            return text
        # Earlier rules win an overlap (a provider token inside an assignment, a URL's
        # password before an e-mail-like `PASS@host.tld`); then left to right.
        found.sort(key=lambda finding: finding[0])
        taken: list[tuple[int, int, str, str]] = []
        for _, start, end, kind, placeholder in found:
            if all(end <= s or start >= e for s, e, _, _ in taken):
                taken.append((start, end, kind, placeholder))
        taken.sort()
        pieces: list[str] = []
        done = 0
        for start, end, kind, placeholder in taken:
            self.counts[kind] += 1
            pieces += [text[done:start], placeholder]
            done = end
        return "".join(pieces) + text[done:]

    def _findings(self, text: str) -> Iterator[tuple[int, int, int, str, str]]:
        """(priority, start, end, kind, placeholder) of every finding, overlaps included."""
        lowered = text.lower()
        if len(lowered) != len(text):  # a few non-ASCII letters lower-case to two characters
            lowered = "".join(char.lower() if len(char.lower()) == 1 else char for char in text)
        seen: set[tuple] = set()  # a needle found twice in one key (`secret_key`)
        for last, (length, indices) in self._automaton.iter(lowered):
            start = last + 1 - length
            for index in indices:
                if index >= 0:
                    finding = self._provider(index, text, start)
                elif index == -1:
                    finding = self._named_value(text, lowered, start, last + 1)
                else:
                    finding = self._prose_word(text, lowered, start, last + 1)
                if finding is not None and finding not in seen:
                    seen.add(finding)
                    yield finding
        if self.settings.emails and "@" in text:
            yield from self._emails(text)

    def _provider(self, index: int, text: str, start: int) -> tuple | None:
        rule, pattern = self._rules[index]
        if rule.left:
            floor = max(0, start - 64)
            while start > floor and text[start - 1] in rule.left:
                start -= 1
        if rule.boundary and start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
            return None
        match = pattern.match(text, start)
        if match is None:
            return None
        if "v" in pattern.groupindex:
            value_start, value_end = match.span("v")
            if rule.name in _CONTEXT_RULES and not self._is_context_value(
                rule.name, match.group("v")
            ):
                return None
            return (index, value_start, value_end, rule.kind, rule.placeholder)
        return (index, match.start(), match.end(), rule.kind, rule.placeholder)

    def _named_value(self, text: str, lowered: str, start: int, end: int) -> tuple | None:
        """A secret word at ``lowered[start:end]``: its assigned value, if it is a secret."""
        word = lowered[start:end]
        key_start = start
        while key_start > 0 and lowered[key_start - 1] in _KEY_CHARS:
            key_start -= 1
        if word == "key" and not _KEY_QUALIFIER.search(lowered, max(0, start - 13), start):
            return None
        password = word in _PASSWORD_WORDS
        kind = "password" if password else "secret"
        priority = len(self._rules) + 1
        match = _AFTER_WORD.match(lowered, end)
        if match is not None:
            group = next(name for name in ("dq", "sq", "bare") if match.group(name) is not None)
            value_start, value_end = match.span(group)
            value = text[value_start:value_end]
            env = group == "bare" and match.group("op") == "=" and self._env_line(text, key_start)
            if self._is_secret_value(value, bare=group == "bare" and not env):
                return (priority, value_start, value_end, kind, f"<{kind.upper()}>")
            return None
        flag = lowered.startswith("--", key_start)
        if password and not flag:
            return self._prose_value(text, lowered, end)
        if not flag:
            return None
        match = _FLAG_VALUE.match(lowered, end)
        if match is None:
            return None
        value_start, value_end = match.span("bare")
        if self._is_secret_value(text[value_start:value_end], bare=True):
            return (priority, value_start, value_end, kind, f"<{kind.upper()}>")
        return None

    def _prose_word(self, text: str, lowered: str, start: int, end: int) -> tuple | None:
        """``pw``, ``pass``, ``passcode`` as whole words (not ``bypass``, ``passes``,
        ``password``, ``DB_PASS``): the password a sentence gives after them."""
        if start > 0 and lowered[start - 1] in _WORD_CHARS:
            return None
        if end < len(lowered) and lowered[end] in _WORD_CHARS:
            return None
        return self._prose_value(text, lowered, end)

    def _prose_value(self, text: str, lowered: str, end: int) -> tuple | None:
        """The password a sentence gives after a password word ending at ``end``: "the
        password is X", "pw: X", "pass 'X'", "the password for staging was changed to X"."""
        match = _PROSE.match(lowered, end)
        if match is None:
            return None
        value_start, value_end = match.span("bare")
        value = text[value_start:value_end]
        quoted = bool(match.group("quote"))
        # "pass to X" is a verb's, not a password's: a lone "to" links nothing.
        unlinked = match.group("link").strip() in ("", "to")
        code_like = _CODE_LIKE.search(value.lower()) is not None
        if unlinked and (code_like or not _LETTER_AND_DIGIT.match(value)):
            return None
        if code_like and match.group("quote") == "`":  # `module.function` in documentation
            return None
        if not self._is_secret_value(value, bare=not quoted):
            return None
        return (len(self._rules) + 1, value_start, value_end, "password", "<PASSWORD>")

    @staticmethod
    def _env_line(text: str, key_start: int) -> bool:
        """Whether the key starts a ``NAME=value`` line of a .env file (a patch line too)."""
        line_start = text.rfind("\n", 0, key_start) + 1
        line_end = text.find("\n", key_start)
        line = text[line_start : line_end if line_end != -1 else len(text)]
        return _ENV_LINE.match(line) is not None

    def _is_secret_value(self, value: str, *, bare: bool) -> bool:
        """Random enough to be a real secret, and not a known look-alike.

        A bare (unquoted) value must also contain a digit or a symbol: unquoted letters and
        underscores are nearly always an identifier in code (``token = next_token``).
        """
        if len(value) < self.settings.min_secret_length:
            return False
        if _UUID.fullmatch(value) or _CHECKSUM.fullmatch(value) or _TEMPLATE.search(value):
            return False
        if bare and not _NOT_IDENTIFIER.search(value):
            return False
        return shannon_entropy(value) >= required_entropy(value, self.settings.entropy_threshold)

    def _is_context_value(self, rule: str, value: str) -> bool:
        """A credential found by its context: a URL's or curl's password is one unless it is a
        template or a placeholder word; a header or docker value must look random (base64 of
        ``user:pass`` may be letters only, but then mixes cases like no English words do, and
        ``Basic attributes/methods`` is prose)."""
        if _TEMPLATE.search(value):
            return False
        if rule in ("url_password", "curl_user"):
            return len(value) >= 3 and value.lower() not in _PLACEHOLDER_WORDS
        if not self._is_secret_value(value, bare=False):
            return False
        if any(char.isdigit() for char in value):
            return True
        upper = sum(char.isupper() for char in value)
        return upper >= 3 and len(value) - upper >= 3 and upper / len(value) >= 0.2

    def _emails(self, text: str) -> Iterator[tuple[int, int, int, str, str]]:
        priority = len(self._rules) + 2
        for at in _AT_DOMAIN.finditer(text):
            position = at.start()
            start = position
            while start > 0 and text[start - 1] in _EMAIL_LOCAL:
                start -= 1
            local = text[start:position].lstrip(".+-")
            start = position - len(local)
            if not local or local.lower() in _EMAIL_KEEP_LOCAL:
                continue
            match = _EMAIL_AT.match(text, position) or _EMAIL_AT_FILE.match(text, position)
            if match is None or text[match.end() : match.end() + 1] == "(":
                continue
            yield (priority, start, match.end(), "email", "<EMAIL>")
