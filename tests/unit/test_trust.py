"""SPEC 7.1 and 7.4 rules that need no broker: token rules, the secret refusal, input types, the JSON guard."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import BaseModel, ValidationError

from contracts.limits import Attributes, EventTime, Id128
from shared import auth
from shared.config import DEV_AUTH_SECRET, Settings
from shared.errors import ApiError
from shared.http_limits import Rejected, check_json_body, json_depth
from shared.service import Runtime

SECRET = "unit-secret-0123456789abcdef0123456789abcdef"
NOW = datetime.now(timezone.utc)


def _decode(token: str) -> auth.Principal:
    return auth.decode(SECRET, token, max_ttl_s=86_400)


def _claims(**kw: object) -> dict[str, object]:
    return {"role": "admin", "iat": NOW, "exp": NOW + timedelta(hours=1), **kw}


def _refusal(error: type[Exception], status: int, code: str, call: Any, arg: Any) -> str:
    """`call(arg)` raises `error` with this status and code; its message."""
    with pytest.raises(error) as e:
        call(arg)
    assert (e.value.status, e.value.code) == (status, code)  # type: ignore[attr-defined]
    return str(e.value.message)  # type: ignore[attr-defined]


def _unauthorized(token: str) -> str:
    return _refusal(ApiError, 401, "UNAUTHORIZED", _decode, token)


# ------------------------------------------------------------------ tokens (SPEC 7.4)


def test_minted_tokens_of_every_role_decode():
    for role in ("admin", "finance", "platform"):
        assert _decode(auth.mint(SECRET, role)) == auth.Principal(role, None)
    assert _decode(auth.mint(SECRET, "org", "hosp-1")) == auth.Principal("org", "hosp-1")


def test_token_without_exp_is_401():
    claims = _claims()
    del claims["exp"]
    assert "exp" in _unauthorized(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_token_without_iat_is_401():
    claims = _claims()
    del claims["iat"]
    assert "iat" in _unauthorized(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_token_living_longer_than_the_max_ttl_is_401():
    ok = _claims(exp=NOW + timedelta(seconds=86_400))
    assert _decode(jwt.encode(ok, SECRET, algorithm="HS256")).role == "admin"
    long = _claims(exp=NOW + timedelta(seconds=86_401))
    assert "lifetime" in _unauthorized(jwt.encode(long, SECRET, algorithm="HS256"))
    assert auth.decode(SECRET, jwt.encode(long, SECRET, algorithm="HS256"), max_ttl_s=90_000).is_admin


def test_expired_token_is_401():
    _unauthorized(jwt.encode(_claims(iat=NOW - timedelta(hours=2), exp=NOW - timedelta(hours=1)), SECRET))


@pytest.mark.parametrize("alg", ["HS512", "HS384"])
def test_token_with_another_hmac_algorithm_is_401(alg):
    _unauthorized(jwt.encode(_claims(), SECRET, algorithm=alg))


def _b64(doc: dict[str, object] | bytes) -> str:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_token_claiming_rs256_is_401_even_when_hmac_signed_with_the_secret():
    """The key-confusion attack: an RS256 header over an HMAC made with the shared secret."""
    import hashlib
    import hmac

    claims = {"role": "admin", "iat": int(NOW.timestamp()), "exp": int(NOW.timestamp()) + 60}
    signing_input = f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}"
    sig = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    _unauthorized(f"{signing_input}.{_b64(sig)}")
    _unauthorized(f"{signing_input}.{_b64(b'x' * 256)}")


def test_alg_none_token_is_401():
    claims = {"role": "admin", "iat": int(NOW.timestamp()), "exp": int(NOW.timestamp()) + 60}
    for alg in ("none", "None", "NONE"):
        _unauthorized(f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(claims)}.")


def test_unknown_role_or_org_token_without_valid_sub_is_401():
    _unauthorized(jwt.encode(_claims(role="root"), SECRET, algorithm="HS256"))
    _unauthorized(jwt.encode(_claims(role="org"), SECRET, algorithm="HS256"))
    _unauthorized(jwt.encode(_claims(role="org", sub="bad\x00org"), SECRET, algorithm="HS256"))


def test_foreign_org_in_a_body_is_403_and_org_may_see_only_its_own():
    p = auth.Principal("org", "hosp-1")
    p.require_org("hosp-1")
    with pytest.raises(ApiError) as e:
        p.require_org("hosp-2")
    assert e.value.status == 403
    assert p.may_see("hosp-1") and not p.may_see("hosp-2", "admin", "finance")
    assert auth.Principal("finance", None).may_see("hosp-2", "admin", "finance")
    assert not auth.Principal("platform", None).may_see("hosp-2", "admin", "finance")


# ------------------------------------------------------------------ the secret (SPEC 7.4)


@pytest.mark.parametrize("secret", [DEV_AUTH_SECRET, "short", "x" * 31])
async def test_service_refuses_to_start_with_a_weak_secret(secret, tmp_path: Path):
    rt = Runtime("refuse", tmp_path, settings=Settings(auth_secret=secret, env="production"))
    with pytest.raises(auth.InsecureSecret):
        await rt.start()  # raises before any broker or database is touched


def test_weak_secret_is_allowed_in_development_only():
    auth.check_secrets(Settings(auth_secret=DEV_AUTH_SECRET, env="development"))
    auth.check_secrets(Settings(auth_secret="short", env="development"))
    auth.check_secrets(Settings(auth_secret="y" * 32, env="production"))
    with pytest.raises(auth.InsecureSecret):
        auth.check_secrets(Settings(auth_secret="y" * 32, env="production", payment_webhook_secret="short"))


def test_environment_default_is_production(monkeypatch):
    monkeypatch.delenv("AIMIS_ENV", raising=False)
    assert not Settings().is_development
    monkeypatch.setenv("AIMIS_ENV", "development")
    assert Settings().is_development


# ------------------------------------------------------------------ input types (SPEC 7.1)


class _M(BaseModel):
    id: Id128 | None = None
    attributes: Attributes | None = None
    time: EventTime | None = None


@pytest.mark.parametrize("value", ["a\x00b", "tab\there", "nl\n", "del\x7f", "x" * 129, "", "lone\ud800"])
def test_ids_refuse_control_characters_surrogates_and_length(value):
    with pytest.raises(ValidationError):
        _M(id=value)


def test_ids_accept_unicode_and_128_characters():
    assert _M(id="病例-1😀").id == "病例-1😀"
    assert _M(id="x" * 128).id == "x" * 128


def test_attribute_limits():
    assert _M(attributes={f"k{i}": "v" * 256 for i in range(32)}).attributes
    for bad in ({f"k{i}": "v" for i in range(33)}, {"k" * 65: "v"}, {"k": "v" * 257}, {"k\x00": "v"},
                {"k": "v\x01"}, {"": "v"}):
        with pytest.raises(ValidationError):
            _M(attributes=bad)


@pytest.mark.parametrize("text", ["1999-12-31T23:59:59Z", "0001-01-01T00:30:00+01:00",
                                  "9999-12-31T23:59:59-01:00", "2000-01-01T00:30:00+01:00"])
def test_event_time_before_2000_or_out_of_range_is_refused_not_an_overflow(text):
    with pytest.raises(ValidationError):
        _M.model_validate_json(json.dumps({"time": text}))


def test_event_time_from_2000_is_accepted():
    assert _M(time="2000-01-01T00:00:00Z").time == datetime(2000, 1, 1, tzinfo=timezone.utc)


# ------------------------------------------------------------------ the JSON guard


def _refused(body: bytes) -> str:
    return _refusal(Rejected, 400, "VALIDATION_ERROR", check_json_body, body)


def test_json_depth_ignores_brackets_inside_strings():
    assert json_depth('{"a": [1, {"b": "[[[[{{{{"}]}') == 3
    assert json_depth('"\\"[["') == 0


def test_nesting_32_passes_and_33_is_refused():
    check_json_body(b"[" * 32 + b"]" * 32)
    assert "nested" in _refused(b"[" * 33 + b"]" * 33)
    assert "nested" in _refused(b"[" * 100_000)  # never a RecursionError


def test_body_guard_refusals():
    assert "UTF-8" in _refused(b'{"a": "\xff\xfe"}')
    assert "duplicate" in _refused(b'{"org_id": "a", "org_id": "b"}')
    assert "control" in _refused(b'{"a": "x\\u0000y"}')
    assert "control" in _refused(b'{"x\\u0001": 1}')
    assert "control" in _refused(b'[["\\ud800"]]')
    assert "not JSON" in _refused(b'{"a": ' + b"9" * 5000 + b"}")
    assert "not JSON" in _refused(b"{nope")
    check_json_body('{"a": "\\ud83d\\ude00 病例", "b": [1.5e300, -1, null]}'.encode())


# ------------------------------------------------------------------ the CLI and .run/env


def test_cli_mints_finance_and_platform_tokens_with_the_secret_of_run_env(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli import main, runenv

    env = tmp_path / "env"
    env.write_text(f"AIMIS_ENV=development\nAIMIS_AUTH_SECRET={SECRET}\nOTHER=ignored\n")
    monkeypatch.delenv("AIMIS_AUTH_SECRET", raising=False)
    monkeypatch.delenv("AIMIS_ENV", raising=False)
    monkeypatch.setattr(runenv, "RUN_ENV", env)
    runner = CliRunner()
    for role in ("finance", "platform"):
        out = runner.invoke(main.app, ["token", "mint", "--role", role])
        assert out.exit_code == 0, out.output
        assert _decode(out.output.strip()).role == role
    assert runner.invoke(main.app, ["token", "mint", "--role", "root"]).exit_code != 0
    assert runner.invoke(main.app, ["token", "mint", "--role", "finance", "--admin"]).exit_code != 0


def test_run_env_never_overrides_the_environment(tmp_path, monkeypatch):
    from cli import runenv

    env = tmp_path / "env"
    env.write_text("AIMIS_AUTH_SECRET=from-file\nAIMIS_ENV=development\n")
    monkeypatch.setenv("AIMIS_AUTH_SECRET", "from-env")
    monkeypatch.delenv("AIMIS_ENV", raising=False)
    runenv.load(env)
    import os

    assert os.environ["AIMIS_AUTH_SECRET"] == "from-env" and os.environ["AIMIS_ENV"] == "development"
    monkeypatch.delenv("AIMIS_ENV")


@pytest.mark.parametrize("service", ["order", "metering"])
def test_service_process_exits_at_once_with_the_development_secret_outside_development(service):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMIS_")}
    env.update(AIMIS_ENV="production", AIMIS_AUTH_SECRET=DEV_AUTH_SECRET,
               AIMIS_KAFKA_BOOTSTRAP="127.0.0.1:1", AIMIS_DATABASE_URL="postgresql://nobody@127.0.0.1:1/x")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", f"services.{service}"], cwd=root, env=env,
                          capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"refuses to start" in done.stderr and b"AIMIS_AUTH_SECRET" in done.stderr
