"""Secret redaction: planted secrets are gone, look-alikes survive, counts are by kind."""

import json
import math
import random
import re
import string
from pathlib import Path

import pytest

from repotune.curate.redact import (
    KINDS,
    PROVIDER_RULES,
    SHORT_VALUE_LENGTH,
    SHORT_VALUE_RATIO,
    Redactor,
    RedactSettings,
    alphabet_size,
    random_entropy,
    required_entropy,
    shannon_entropy,
)
from testdata.commits import History, all_rows, change, run_curate
from testdata.secret_corpus import Sample, corpus, formats

ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
DEFAULTS = RedactSettings(emails=True, entropy_threshold=3.0, min_secret_length=8)

PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
# Every secret kind, as (kind, secret text, placeholder that replaces it).
SECRETS = [
    ("aws_access_key", "AKIAIOSFODNN7EXAMPLE", "<KEY>"),
    ("github_token", "ghp_" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6", "<TOKEN>"),
    ("github_token", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuv", "<TOKEN>"),
    ("gitlab_token", "glpat-" + "x7Rk2Lq9Zt4Vm8Pw3Ns6", "<TOKEN>"),
    ("slack_token", "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "<TOKEN>"),
    ("stripe_key", "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "<TOKEN>"),
    ("private_key", PRIVATE_KEY, "<PRIVATE_KEY>"),
    ("jwt", JWT, "<JWT>"),
    ("email", "ada.lovelace@example.org", "<EMAIL>"),
]
# Assignments: (kind, line, the value that must disappear, the line after redaction).
ASSIGNMENTS = [
    (
        "password",
        'DB_PASSWORD = "s3cr3t-P4ssw0rd!"',
        "s3cr3t-P4ssw0rd!",
        'DB_PASSWORD = "<PASSWORD>"',
    ),
    ("password", "password=Xk9#mQ2$vL7p", "Xk9#mQ2$vL7p", "password=<PASSWORD>"),
    ("secret", 'api_key: "a8F3kL0qZ9xW2mN7"', "a8F3kL0qZ9xW2mN7", 'api_key: "<SECRET>"'),
    (
        "secret",
        "  client_secret: 7fG2-hJ9k-Lm3n-Pq8r",
        "7fG2-hJ9k-Lm3n-Pq8r",
        "  client_secret: <SECRET>",
    ),
    (
        "secret",
        "'auth_token' => 'Zm9vYmFyYmF6cXV4MTIz'",
        "Zm9vYmFyYmF6cXV4MTIz",
        "'auth_token' => '<SECRET>'",
    ),
    (
        "password",
        'İstanbul office: SMTP_PASSWORD="Şifre-9xQ2!vL"',
        "Şifre-9xQ2!vL",
        'İstanbul office: SMTP_PASSWORD="<PASSWORD>"',
    ),
    (
        "secret",
        'AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        'AWS_SECRET_ACCESS_KEY="<SECRET>"',
    ),
]
# Look-alikes: text that resembles a secret and must come out unchanged.
LOOK_ALIKES = [
    "sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    'md5: "d41d8cd98f00b204e9800998ecf8427e"',
    'password_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"',
    "Fixes the bug introduced in 3f786850e387550fdab836ed7e6dc881de23001b.",
    'request_id = "123e4567-e89b-12d3-a456-426614174000"',
    'secret: "123e4567-e89b-12d3-a456-426614174000"',
    '"integrity": "sha512-7Ye7EWYDnmA7a7Ko3ih0cTfG6Uf3TPvWG2BLGGs9YnHo+CidXD7DvQbk5NTkbw=="',
    'token: "sha512-7Ye7EWYDnmA7a7Ko3ih0cTfG6Uf3TPvWG2BLGGs9YnHo+CidXD7DvQbk5NTkbw=="',
    'tokenizer = "bert-base-uncased-whole-word"',
    "token = next_token_id",
    "password = os.environ.get('DB_PASSWORD')",
    'password = "changeme"',
    "token: ${{ secrets.GITHUB_TOKEN }}",
    "git clone git@github.com:org/repo.git",
    "if token == expected_token_value:",
    "lodash@4.17.21",
    'cache[key] = "q7Wm2Zp9Lx4Rk8Nv"',
    'monkey = "q7Wm2Zp9Lx4Rk8Nv"',
    # Code that the e-mail rule used to take for an address.
    "scores = q@k.transpose(-2, -1) / math.sqrt(d)",
    "![logo](assets/logo@2x.png)",
    "+    x = 1\n+@app.route('/users')\n+def users():",
    "out = x@self.weight.T + self.bias",
    # Prose and code near the new context rules.
    "It implements all the basic attributes/methods of the Table class.",
    "Bearer authentication is configured in settings.py",
    "pip install scikit-learn  # sk-learn is the old name",
    "postgres://user:${DB_PASSWORD}@db.example.com/app",
    "Set the password to something only you know.",
    "def connect(include_password: Optional[bool] = None) -> None:",
    # Named, but identifiers, templates and placeholders: no secret however short.
    "token = get_user_name",
    "password = self.password_field",
    'token = os.environ["TOKEN"]',
    "password = None",
    'password: "********"',
    'token: "<your-token>"',
    "deploy --token <your-token>",
    'secret = "xxxxxxxx"',
    'DB_PASSWORD="changeme"',
]
# Short values that a secret word or flag names, each with Shannon entropy in [2.6, 3.0): under
# the fixed 3.0 bits/char, yet each is a uniformly random draw (but the first, from a bug
# report). (kind, line, value).
SHORT_SECRETS = [
    ("secret", "deploy --token Z8gebG1glQ1Ggg", "Z8gebG1glQ1Ggg"),
    ("password", "mysql -u app --password=oOOL8dKLzd db", "oOOL8dKLzd"),
    ("secret", "export API_TOKEN=29be2u66mr26", "29be2u66mr26"),
    ("secret", "  token: d7dnGb5G25T5T", "d7dnGb5G25T5T"),
    ("password", 'DB_PASSWORD="826ZWOf0WOO"', "826ZWOf0WOO"),
    ("secret", "auth_token = '74bf20f876ffc474'", "74bf20f876ffc474"),
]


def test_shannon_entropy_by_hand() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abab") == 1.0
    assert shannon_entropy("abcd") == 2.0
    # "aab": p = 2/3, 1/3.
    assert math.isclose(shannon_entropy("aab"), -(2 / 3) * math.log2(2 / 3) - math.log2(1 / 3) / 3)


def test_random_entropy_by_hand() -> None:
    # Two characters from {a, b}: aa and bb score 0, ab and ba score 1.
    assert random_entropy(2, 2) == 0.5
    # Three from {a, b}: aaa, bbb score 0; the other six score H(1/3, 2/3).
    assert math.isclose(random_entropy(3, 2), 6 / 8 * shannon_entropy("aab"))


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("74bf20f876ffc474", 16),  # hex digits of one case: a hex token
        ("74BF20F876FFC474", 16),
        ("74bF20f876FfC474", 62),  # mixed-case hex is drawn from letters of both cases
        ("29be2u66mr26", 36),  # lower-case and digits
        ("oOOL8dKLzd", 62),  # both cases and digits
        ("s3cr3t-t0k3n_x", 68),  # lower-case, digits and punctuation
        ("kX9#mQ2!vB", 94),  # every printable class
    ],
)
def test_alphabet_size_by_hand(value: str, size: int) -> None:
    assert alphabet_size(value) == size


def test_the_short_value_allowance_ends_at_its_length() -> None:
    """Up to SHORT_VALUE_LENGTH characters a letters-and-digits value needs a share of what a
    random one scores; longer ones face the configured threshold (here a strict 5.0)."""
    short = "g1" * (SHORT_VALUE_LENGTH // 2)
    assert required_entropy(short, 5.0) == SHORT_VALUE_RATIO * random_entropy(len(short), 36)
    assert required_entropy(short + "g", 5.0) == 5.0


@pytest.mark.parametrize(("kind", "secret", "placeholder"), SECRETS)
def test_each_kind_is_replaced_by_its_placeholder(kind: str, secret: str, placeholder: str) -> None:
    redactor = Redactor(DEFAULTS)
    text = f"before {secret} after"
    assert redactor.redact(text) == f"before {placeholder} after"
    assert redactor.counts[kind] == 1
    assert sum(redactor.counts.values()) == 1


@pytest.mark.parametrize(("kind", "line", "value", "expected"), ASSIGNMENTS)
def test_assignments_keep_the_key_and_lose_the_value(
    kind: str, line: str, value: str, expected: str
) -> None:
    redactor = Redactor(DEFAULTS)
    assert redactor.redact(line) == expected
    assert redactor.counts[kind] == 1


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_survive(text: str) -> None:
    redactor = Redactor(DEFAULTS)
    assert redactor.redact(text) == text
    assert sum(redactor.counts.values()) == 0


def test_private_key_block_in_a_patch_goes_whole() -> None:
    lines = "\n".join(f"+{line}" for line in PRIVATE_KEY.splitlines())
    patch = f"@@ -0,0 +1,6 @@\n+# deploy key\n{lines}\n+# end\n"
    assert (
        Redactor(DEFAULTS).redact(patch)
        == "@@ -0,0 +1,6 @@\n+# deploy key\n+<PRIVATE_KEY>\n+# end\n"
    )


def test_private_key_cut_by_truncation_is_redacted_to_the_end() -> None:
    truncated = "+key = '''\n" + "\n".join(f"+{line}" for line in PRIVATE_KEY.splitlines()[:2])
    assert Redactor(DEFAULTS).redact(truncated) == "+key = '''\n+<PRIVATE_KEY>"


def test_settings_change_what_is_redacted() -> None:
    text = 'password = "changeme" by ada@example.org'
    assert Redactor(DEFAULTS).redact(text) == 'password = "changeme" by <EMAIL>'
    loose = RedactSettings(emails=False, entropy_threshold=2.5, min_secret_length=8)
    assert Redactor(loose).redact(text) == 'password = "<PASSWORD>" by ada@example.org'
    short = RedactSettings(emails=True, entropy_threshold=2.5, min_secret_length=9)
    assert Redactor(short).redact(text) == 'password = "changeme" by <EMAIL>'


def test_a_large_patch_is_redacted_line_by_line() -> None:
    """Throughput lives in benchmarks/redact.py; here, that every line of a large text counts."""
    chunk = "".join(
        f"+    value_{n} = compute(table[{n}], key='k{n}', sha='{n:040x}')  # user@example.org\n"
        for n in range(2000)
    )
    redactor = Redactor(DEFAULTS)
    out = redactor.redact(chunk)
    assert redactor.counts["email"] == 2000 and sum(redactor.counts.values()) == 2000
    assert out == chunk.replace("user@example.org", "<EMAIL>")


# --- the generated corpus: every format, several realistic variants ---------------------------

CORPUS = corpus(seed=0)


def test_the_corpus_is_broad() -> None:
    names = formats(CORPUS)
    # Every provider rule meets at least one sample: a rule without one is never checked.
    untried = [
        rule.name
        for rule in PROVIDER_RULES
        if not any(re.search(rule.pattern, sample.text, rule.flags) for sample in CORPUS)
    ]
    assert not untried, f"no corpus sample for {untried}"
    assert all(sum(sample.format == name for sample in CORPUS) >= 3 for name in names)


@pytest.mark.parametrize("name", formats(CORPUS))
def test_every_variant_of_every_format_is_redacted(name: str) -> None:
    for sample in (s for s in CORPUS if s.format == name):
        redactor = Redactor(DEFAULTS)
        out = redactor.redact(sample.text)
        assert sample.secret not in out, (sample.text, out)
        assert sample.kept in out
        assert sum(redactor.counts.values()) >= 1


def test_a_url_password_is_a_password_not_an_email() -> None:
    for url, expected in [
        ("postgres://app:Xk9mQ2vLp7@db.example.com/app", "postgres://app:<PASSWORD>@db.example.com/app"),
        ("redis://:s3cretPW42@cache.example.com:6379/0", "redis://:<PASSWORD>@cache.example.com:6379/0"),
    ]:  # fmt: skip
        redactor = Redactor(DEFAULTS)
        assert redactor.redact(url) == expected
        assert redactor.counts["password"] == 1 and redactor.counts["email"] == 0


def test_an_email_in_a_file_name_keeps_the_extension() -> None:
    redactor = Redactor(DEFAULTS)
    assert redactor.redact("fixtures/ada@example.org.json") == "fixtures/<EMAIL>.json"


def test_entropy_at_exactly_the_threshold_is_a_secret() -> None:
    # Eight different characters: exactly log2(8) = 3.0 bits each. No digit, so no short-value
    # allowance: the fixed threshold applies.
    value = "Qx#vLp@W"
    assert shannon_entropy(value) == DEFAULTS.entropy_threshold
    assert Redactor(DEFAULTS).redact(f'password = "{value}"') == 'password = "<PASSWORD>"'
    # One repeat: under 3 bits, long enough, and letters only, so no short-token allowance.
    below = "Abcxyzqrr"
    assert shannon_entropy(below) < 3.0
    assert Redactor(DEFAULTS).redact(f'password = "{below}"') == f'password = "{below}"'


@pytest.mark.parametrize(("kind", "line", "value"), SHORT_SECRETS)
def test_short_named_tokens_under_the_fixed_threshold_are_redacted(
    kind: str, line: str, value: str
) -> None:
    assert 2.6 <= shannon_entropy(value) < DEFAULTS.entropy_threshold
    redactor = Redactor(DEFAULTS)
    assert redactor.redact(line) == line.replace(value, f"<{kind.upper()}>")
    assert redactor.counts[kind] == 1


@pytest.mark.parametrize(("length", "alphabet"), [(8, ALNUM), (10, ALNUM), (16, HEX)])
def test_random_short_tokens_are_nearly_all_redacted(length: int, alphabet: str) -> None:
    """Of 2,000 uniformly random tokens after ``--token``, a fixed 3.0 bits/char lets 38% of
    the 8-character, 13% of the 10-character alphanumeric and 15% of 16-digit hex ones through;
    the length-aware threshold under 1%."""
    rng = random.Random(length)
    tokens = ["".join(rng.choice(alphabet) for _ in range(length)) for _ in range(2000)]
    tokens = [t for t in tokens if re.search("[0-9]", t) and re.search("[a-zA-Z]", t)]
    redactor = Redactor(DEFAULTS)
    leaked = [t for t in tokens if t in redactor.redact(f"deploy --token {t}")]
    assert len(leaked) < 0.01 * len(tokens), leaked[:5]


def test_letters_only_values_count_in_env_files_only() -> None:
    assert Redactor(DEFAULTS).redact("DB_PASSWORD=correcthorsebattery") == "DB_PASSWORD=<PASSWORD>"
    code = "password = correcthorsebattery"  # an identifier in code
    assert Redactor(DEFAULTS).redact(code) == code


def test_a_provider_token_inside_an_assignment_counts_once() -> None:
    token = "ghp_" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"
    redactor = Redactor(DEFAULTS)
    assert redactor.redact(f'GITHUB_TOKEN = "{token}"') == 'GITHUB_TOKEN = "<TOKEN>"'
    assert redactor.counts["github_token"] == 1 and sum(redactor.counts.values()) == 1


def test_the_same_seed_gives_the_same_corpus() -> None:
    assert corpus(seed=3) == corpus(seed=3) != corpus(seed=4)
    assert all(isinstance(sample, Sample) for sample in CORPUS)


def test_secrets_never_reach_the_output_parquet(tmp_path: Path) -> None:
    """Plant every kind in subjects, bodies, patches and paths; none survives curation."""
    history = History()
    for number, (_, secret, _) in enumerate(SECRETS):
        history.add(f"Configure the client {number}", f"Uses {secret} for now.")
        plus = "\n".join(f"+{line}" for line in secret.splitlines())
        history.add(
            f"Store the credential {number}",
            files=[change(f"conf/settings_{number}.py", f"@@ -1,0 +1,2 @@\n+# key\n{plus}\n")],
        )
    for number, (_, line, _, _) in enumerate(ASSIGNMENTS):
        history.add(f"Add the settings file {number}", files=[change("app.env", f"+{line}\n")])
    history.add(
        "Use ada.lovelace@example.org in tests",
        files=[change("fixtures/ada.lovelace@example.org.json", "+{}\n", change_type="A")],
    )
    old_path_token = "glpat-" + "Qm7Zt2Vx9Lr4Pk8Ns3Wb"
    renamed = change(
        "conf/token.txt",
        "@@ -1 +1 @@\n-a\n+b\n",
        change_type="R",
        old_path=f"conf/{old_path_token}.txt",
    )
    history.add("Rename the leaked file", files=[renamed])
    look_alikes = "\n".join(f"+{text}" for text in LOOK_ALIKES) + "\n"
    history.add("Pin the dependencies with checksums", files=[change("deps.txt", look_alikes)])
    for number in range(3):
        history.add(f"Grow the history, step {number}")

    splits, report = run_curate(tmp_path, history.rows)
    rows = all_rows(splits)
    assert len(rows) == len(history.rows)
    text = json.dumps(rows, default=str)
    for _, secret, _ in SECRETS:
        for line in secret.splitlines():
            assert line not in text
    for _, _, value, _ in ASSIGNMENTS:
        assert value not in text
    assert old_path_token not in text and "conf/<TOKEN>.txt" in text
    for look_alike in LOOK_ALIKES:
        assert json.dumps(look_alike)[1:-1] in text
    planted = {kind: 0 for kind in KINDS}
    for kind, _, _ in SECRETS:
        planted[kind] += 2
    for kind, *_ in ASSIGNMENTS:
        planted[kind] += 1
    planted["email"] += 2  # subject and path of the fixtures commit
    planted["gitlab_token"] += 1  # the renamed file's old path
    assert report["redactions"] == planted


def test_generations_written_by_evaluate_are_redacted() -> None:
    """A model can repeat a secret it memorised in pre-training: what the evaluation writes
    (generations.jsonl rows, report examples) is redacted like the data."""
    from repotune.evaluate.stage import (
        COMMIT_MESSAGE,
        Questions,
        _examples,
        _generation_rows,
        redacted,
    )
    from repotune.evaluate.tasks import Example
    from repotune.inference.decoding import Generation

    token = "ghp_" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"
    example = Example(
        task=COMMIT_MESSAGE, sha="a" * 40, prompt="p", reference="Fix the parser", prompt_ids=(1,)
    )
    asked = Questions(commit_messages=[example], code_changes=[], behaviour=[], test_commits=1)

    def generated(text: str) -> Generation:
        return Generation(text=text, new_tokens=1, prompt_tokens=1, truncated=False, finish="eos")

    generations = {
        "base": {COMMIT_MESSAGE: [generated(f"Use {token}")], "code_change": [], "behaviour": []},
        "adapted": {
            COMMIT_MESSAGE: [generated("Fix the parser")],
            "code_change": [],
            "behaviour": [],
        },
    }
    written = redacted(generations, Redactor(DEFAULTS))
    [row] = list(_generation_rows(asked, written))
    [shown] = _examples(asked, written, 5)
    for written in (row, shown):
        assert written["base"] == "Use <TOKEN>" and written["adapted"] == "Fix the parser"


NO_EMAILS = RedactSettings(emails=False, entropy_threshold=3.0, min_secret_length=8)


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        # A letters-only value counts on a .env line wherever that line sits in a patch.
        ("A=1\nB=2\nDB_PASSWORD=correcthorsebattery\nC=3\nrun(x)", True),
        ("\nDB_PASSWORD=correcthorsebattery", True),
        ("A=1\nDB_PASSWORD=correcthorsebattery", True),
        # The key's own line decides, not the lines around it.
        ("A=1\nB=2\nconfig(DB_PASSWORD=correcthorsebattery)\nC=3", False),
        ("DB_PASSWORD=correcthorsebattery x", False),
        ("DB_PASSWORD=correcthorsebattery\nrun(x)", True),
        ("A=1\nDB_PASSWORD=correcthorsebattery\nrun(x)\nrun(y)", True),
    ],
)
def test_a_env_line_is_judged_on_its_own_line(text: str, redacted: bool) -> None:
    assert ("<PASSWORD>" in Redactor(NO_EMAILS).redact(text)) is redacted


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # URL and curl passwords: three characters are enough, a placeholder word is not.
        ("postgres://app:abc@db.example.com/x", "postgres://app:<PASSWORD>@db.example.com/x"),
        ("postgres://app:ab@db.example.com/x", "postgres://app:ab@db.example.com/x"),
        ("postgres://app:PASSWORD@db.example.com/x", "postgres://app:PASSWORD@db.example.com/x"),
        ("curl -u admin:abc https://x", "curl -u admin:<PASSWORD> https://x"),
        ("curl -u admin:CHANGEME https://x", "curl -u admin:CHANGEME https://x"),
        # A header value of letters only must mix cases like base64 does: at least 3 capitals,
        # at least 3 other characters, capitals at least a fifth of it.
        ("Bearer ABCdefghijklmn", "Bearer <SECRET>"),
        ("Bearer ABCdefghijklmno", "Bearer <SECRET>"),  # exactly a fifth
        ("Bearer ABCdefghijklmnop", "Bearer ABCdefghijklmnop"),  # under a fifth
        ("Bearer ABcdefghijklmn", "Bearer ABcdefghijklmn"),  # two capitals
        ("Bearer ABCDEFGHIJKLmno", "Bearer <SECRET>"),  # three others
        ("Bearer ABCDEFGHIJKLmn", "Bearer ABCDEFGHIJKLmn"),  # two others
        # With a digit it counts whatever its case; too little entropy never does.
        ("Bearer abcdefghijk1", "Bearer <SECRET>"),
        ("Bearer aaaaaaaaaaa1", "Bearer aaaaaaaaaaa1"),
    ],
)
def test_credentials_in_context_are_judged_by_their_kind(text: str, expected: str) -> None:
    assert Redactor(NO_EMAILS).redact(text) == expected


def test_a_secret_value_that_looks_like_an_email_is_a_password() -> None:
    redactor = Redactor(DEFAULTS)
    assert redactor.redact("password=kq7z@example.com") == "password=<PASSWORD>"
    assert redactor.counts["password"] == 1 and redactor.counts["email"] == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # At the very start of the text, and in a word ending the text.
        ("ada@example.org", "<EMAIL>"),
        ("ada@example.org wrote this", "<EMAIL> wrote this"),
        # Punctuation before the local part is not part of the address; an X is.
        ("--ada@example.org", "--<EMAIL>"),
        ("-ada@example.org", "-<EMAIL>"),
        ("Xavier@example.org", "<EMAIL>"),
        # What is skipped does not stop the search for the addresses after it.
        (
            "git@github.com:org/repo.git by ada@example.org",
            "git@github.com:org/repo.git by <EMAIL>",
        ),
        ("y = out@self.to(device) # ada@example.org", "y = out@self.to(device) # <EMAIL>"),
    ],
)
def test_emails_found_from_each_at_sign(text: str, expected: str) -> None:
    assert Redactor(DEFAULTS).redact(text) == expected


def test_a_password_flag_at_the_start_of_the_text() -> None:
    assert Redactor(DEFAULTS).redact("--password Xk9mQ2vLp7") == "--password <PASSWORD>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A provider format must not follow a letter, digit or underscore: inside a longer
        # identifier it is not that provider's token.
        ("AKIAIOSFODNN7EXAMPLE", "<KEY>"),
        ("xAKIAIOSFODNN7EXAMPLE", "xAKIAIOSFODNN7EXAMPLE"),
        ("_AKIAIOSFODNN7EXAMPLE", "_AKIAIOSFODNN7EXAMPLE"),
        # A format found by a needle in its middle is read back to the start of the text.
        ("0123456789abcdef0123456789abcdef-us12", "<KEY>"),
        # Two findings that touch are both replaced, whichever rule comes first.
        (PRIVATE_KEY + PRIVATE_KEY, "<PRIVATE_KEY><PRIVATE_KEY>"),
        ("AKIAIOSFODNN7EXAMPLE" + PRIVATE_KEY, "<KEY><PRIVATE_KEY>"),
        (PRIVATE_KEY + "AKIAIOSFODNN7EXAMPLE", "<PRIVATE_KEY><KEY>"),
    ],
)
def test_provider_formats_at_the_edges_of_the_text_and_of_each_other(
    text: str, expected: str
) -> None:
    assert Redactor(NO_EMAILS).redact(text) == expected


# --- passwords in prose ---------------------------------------------------------------------

# The grid of phrasings: where the sentence starts, the word that names the password, what
# links it to the value, and how the value is quoted. The rule is general (any run of links,
# an optional "for/of/on ..." qualifier), so held-out phrasings below are tested too.
PROSE_STARTS = ["", "Deployed the fix; ", "(staging) "]
PROSE_WORDS = [
    "password",
    "Password",
    "passwd",
    "passphrase",
    "pwd",
    "pw",
    "PW",
    "pass",
    "passcode",
]
PROSE_LINKS = [" is ", " was ", ": ", ":", " = ", " ", " is now ", " was reset to ", " -> "]
PROSE_QUOTES = ["", '"', "'", "`"]
PROSE_HELD_OUT = [
    "the password for the staging db was changed to {v}.",
    "Login works again, the admin pw is now {v} (rotate it).",
    "use pass {v} for the VPN",
    "pw for root: '{v}'",
    "passcode will be {v} until Monday",
    "The WiFi password is: `{v}`",
    "fixed auth (password has been set to {v})",
]
# Prose that names a password, or says "pass", next to something that is not one.
PROSE_LOOK_ALIKES = [
    "pass the test",
    "bypass 3 checks, compass heading 270",
    "passes all 1024 tests; all tests pass: 42/42",
    "password_reset_v2 endpoint and pw_len = 12",
    "pass ctx.device to the model",
    "password hashing with argon2id",
    "pass 3f9a2c1de8 to git show",
    "pass 0x7fff8a2b to the parser",
    "pass --no-cache-dir to pip",
    "the password field is required",
    "password is too short (min 12)",
    "password for user2 is required",
    "pass self.hidden_size*4 to fc1",
    "we pass HTTP/1.1 here, and pass through v1.2.3-rc1",
    "pass them to tokenize_v2()",
    "passport number field",
    "pass the --token flag",
    "kwargs to pass to `httpx2.request`, or pass to f2.py",
    "def login(password: Optional[str] = None) -> None:",
]


def prose_value(rng: random.Random) -> str:
    """A random password with a letter and a digit: 12 to 16 characters, the last one
    alphanumeric (a trailing "!" or "." reads as the sentence's own), random enough for the
    entropy rule (which its own tests cover: this one is about the phrasing)."""
    alphabet = ALNUM + "#!%^&+~"
    while True:
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(11, 15)))
        value += rng.choice(ALNUM)
        mixed = re.search(r"[A-Za-z]", value) and re.search(r"[0-9]", value)
        if mixed and shannon_entropy(value) >= required_entropy(value, 3.0):
            return value


def test_a_password_in_prose_is_redacted_however_it_is_phrased() -> None:
    rng = random.Random(23)
    leaked = []
    phrasings = [
        start + word + link + quote + "{v}" + quote + end
        for start in PROSE_STARTS
        for word in PROSE_WORDS
        for link in PROSE_LINKS
        for quote in PROSE_QUOTES
        for end in ("", " until Friday.")
        if not (link == ":" and start)  # "pw:X" only at a line's start
    ] + PROSE_HELD_OUT
    for phrasing in phrasings:
        value = prose_value(rng)
        redactor = Redactor(DEFAULTS)
        text = phrasing.replace("{v}", value)
        redacted = redactor.redact(text)
        if value in redacted or redacted != text.replace(value, "<PASSWORD>"):
            leaked.append(text)
        elif redactor.counts["password"] != 1:
            leaked.append(f"{text} (counted {dict(redactor.counts)})")
    assert len(phrasings) > 1000
    assert not leaked, leaked[:20]


@pytest.mark.parametrize("text", PROSE_LOOK_ALIKES)
def test_prose_look_alikes_survive(text: str) -> None:
    redactor = Redactor(DEFAULTS)
    assert redactor.redact(text) == text
    assert sum(redactor.counts.values()) == 0
