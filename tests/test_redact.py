"""Secret redaction: planted secrets are gone, look-alikes survive, counts are by kind."""

import json
import math
import re
from pathlib import Path

import pytest

from repotune.curate.redact import (
    KINDS,
    PROVIDER_RULES,
    Redactor,
    RedactSettings,
    shannon_entropy,
)
from testdata.commits import History, all_rows, change, run_curate
from testdata.secret_corpus import Sample, corpus, formats

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
]


def test_shannon_entropy_by_hand() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abab") == 1.0
    assert shannon_entropy("abcd") == 2.0
    # "aab": p = 2/3, 1/3.
    assert math.isclose(shannon_entropy("aab"), -(2 / 3) * math.log2(2 / 3) - math.log2(1 / 3) / 3)


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
    value = "Ab3$Xy9!"  # eight different characters: exactly log2(8) = 3.0 bits each
    assert shannon_entropy(value) == DEFAULTS.entropy_threshold
    assert Redactor(DEFAULTS).redact(f'password = "{value}"') == 'password = "<PASSWORD>"'
    below = "Ab3$Xy9!!"  # one repeat: under 3 bits, and long enough
    assert shannon_entropy(below) < 3.0
    assert Redactor(DEFAULTS).redact(f'password = "{below}"') == f'password = "{below}"'


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
    from repotune.evaluate.generation import Generation
    from repotune.evaluate.stage import (
        COMMIT_MESSAGE,
        Questions,
        _examples,
        _generation_rows,
        redacted,
    )
    from repotune.evaluate.tasks import Example

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
