"""deploy/setup/install.sh: `make doctor` and the installer `make up`/`make test` run first.

Each test fakes the machine through the installer's variables: a prerequisite's executable
(AIMIS_PREREQ_<NAME>), PATH, the list, tools.d/, /etc/os-release and apt-get. No real package is
installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "setup" / "install.sh"


def run(*args: str, env: dict[str, str] | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
    e = dict(env if env is not None else os.environ)
    e.update(extra)
    return subprocess.run([str(INSTALL), *args], env=e, capture_output=True, text=True, timeout=120)


def line_of(out: str, name: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.split()[:1] == [name]]
    assert len(lines) == 1, out
    return lines[0]


def executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


def test_doctor_names_java_missing_when_its_executable_does_not_exist(cache: str) -> None:
    r = run("doctor", AIMIS_PREREQ_JAVA="/nonexistent/bin/java", AIMIS_CACHE=cache)
    assert r.returncode == 1, r.stdout + r.stderr
    java = line_of(r.stdout, "java")
    assert java.split()[1] == "MISSING"
    assert "not found: /nonexistent/bin/java" in java
    assert "openjdk-17-jre-headless" in java  # where it comes from
    assert r.stdout.splitlines()[-1].startswith("missing: java ")
    # the others are still reported, with where they were found and a version
    curl = line_of(r.stdout, "curl").split()
    assert curl[1] == "ok" and curl[2][0].isdigit() and curl[3].startswith("/")


def test_make_doctor_runs_the_same_check(cache: str) -> None:
    e = dict(os.environ, AIMIS_PREREQ_MAVEN="/nonexistent/mvn", AIMIS_CACHE=cache)
    r = subprocess.run(["make", "-s", "--no-print-directory", "doctor"], cwd=ROOT, env=e,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert line_of(r.stdout, "maven").split()[1] == "MISSING"
    assert line_of(r.stdout, "java").split()[1] == "ok"


SCRIPT_TOOLS = ("bash", "sh", "env", "sed", "awk", "grep", "sort", "head", "tail", "cut", "timeout", "stat",
                "cksum", "id", "getent", "basename", "dirname", "ls", "cat", "readlink", "mkdir", "touch", "tee")


def bare_path(bin_dir: Path, *, without: tuple[str, ...] = ()) -> str:
    """A PATH holding only the commands install.sh itself runs (less `without`)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in SCRIPT_TOOLS:
        found = shutil.which(tool)
        if found and tool not in without:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_doctor_on_a_path_without_java(tmp_path: Path, cache: str) -> None:
    # java, mvn, pg_ctl, curl are absent from this PATH.
    bin_dir = Path(bare_path(tmp_path / "bin"))
    r = run("doctor", PATH=str(bin_dir), AIMIS_CACHE=cache, AIMIS_PREREQ_POSTGRESQL="pg_ctl")
    assert r.returncode == 1, r.stdout + r.stderr
    assert line_of(r.stdout, "java").split()[1:3] == ["MISSING", "-"]
    assert "not found: java" in line_of(r.stdout, "java")
    assert "java" in r.stdout.splitlines()[-1].split()


def fake_list(tmp_path: Path, lines: list[str]) -> str:
    f = tmp_path / "prerequisites.txt"
    f.write_text("# name | min | probe | packages | why\n\n" + "\n".join(lines) + "\n")
    return str(f)


def test_doctor_reads_versions_and_minimums_from_the_list(tmp_path: Path, cache: str) -> None:
    tool = executable(tmp_path / "opt" / "v1" / "widget", 'echo "Widget \\033[1mversion 1.2.3\\033[m (build 9)"\n')
    executable(tmp_path / "opt" / "bad" / "gadget", 'echo "gadget: libfoo.so: cannot open"; exit 127\n')
    lst = fake_list(tmp_path, [
        f"widget | 1.2 | no-such-widget,{tmp_path}/opt/*/widget --version | widget-pkg | makes widgets",
        f"newer  | 1.10 | {tool} --version | widget2 | needs a newer widget",
        f"gadget | - | {tmp_path}/opt/bad/gadget -V | gadget-pkg | gadgets",
    ])
    r = run("doctor", AIMIS_SETUP_LIST=lst, AIMIS_SETUP_TOOLS=str(tmp_path / "none"), AIMIS_CACHE=cache)
    assert r.returncode == 1, r.stdout + r.stderr
    assert line_of(r.stdout, "widget").split()[1:4] == ["ok", "1.2.3", str(tool)]  # found by the glob
    newer = line_of(r.stdout, "newer")
    assert newer.split()[1:3] == ["TOO-OLD", "1.2.3"] and "needs 1.10+" in newer and "widget2" in newer
    gadget = line_of(r.stdout, "gadget")
    assert gadget.split()[1] == "BROKEN" and "cannot open" in gadget
    assert r.stdout.splitlines()[-1].startswith("missing: newer gadget ")

    ok = fake_list(tmp_path, [f"widget | 1.2 | {tool} --version | widget-pkg | makes widgets"])
    r = run("doctor", AIMIS_SETUP_LIST=ok, AIMIS_SETUP_TOOLS=str(tmp_path / "none"), AIMIS_CACHE=cache)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "all prerequisites found"


def test_other_systems_get_one_line_naming_what_to_install(tmp_path: Path, cache: str) -> None:
    osr = tmp_path / "os-release"
    osr.write_text('ID=fedora\nID_LIKE="rhel centos"\n')
    apt = executable(tmp_path / "apt-get", f'echo "$@" >> {tmp_path}/apt-calls\n')
    lst = fake_list(tmp_path, ["ghost | 2 | ghost-tool --version | ghost-pkg,ghost-data | haunts"])
    r = run("ensure", AIMIS_SETUP_LIST=lst, AIMIS_SETUP_TOOLS=str(tmp_path / "none"), AIMIS_CACHE=cache,
            AIMIS_SETUP_OS_RELEASE=str(osr), AIMIS_SETUP_APT_GET=str(apt))
    assert r.returncode == 1
    assert r.stdout.count("\n") == 1, r.stdout
    assert "missing: ghost 2+" in r.stdout and "not Debian/Ubuntu" in r.stdout
    assert "ghost-pkg ghost-data" in r.stdout
    assert not (tmp_path / "apt-calls").exists()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="as non-root the installer goes through sudo")


@needs_root
def test_debian_installs_what_is_missing_with_apt_then_is_silent(tmp_path: Path, cache: str) -> None:
    osr = tmp_path / "os-release"
    osr.write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    bin_dir = tmp_path / "bin"
    calls = tmp_path / "apt-calls"
    # A fake apt-get: records its arguments; "install" puts ghost-tool on PATH, as the package would.
    apt = executable(tmp_path / "apt-get", f"""echo "$@" >> {calls}
case " $* " in *" install "*) mkdir -p {bin_dir}; printf '#!/bin/sh\\necho ghost 2.5\\n' > {bin_dir}/ghost-tool; chmod +x {bin_dir}/ghost-tool ;; esac
""")
    lists = tmp_path / "lists"
    lists.mkdir()  # no package lists yet: apt-get update comes first
    lst = fake_list(tmp_path, ["ghost | 2 | ghost-tool --version | ghost-pkg | haunts the tests"])
    env = dict(os.environ, AIMIS_SETUP_LIST=lst, AIMIS_SETUP_TOOLS=str(tmp_path / "none"), AIMIS_CACHE=cache,
               AIMIS_SETUP_OS_RELEASE=str(osr), AIMIS_SETUP_APT_GET=str(apt), AIMIS_SETUP_APT_LISTS=str(lists),
               PATH=f"{bin_dir}:{os.environ['PATH']}")
    r = run("ensure", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ghost 2+" in r.stdout and "ghost-pkg" in r.stdout and "haunts the tests" in r.stdout
    got = [c.split() for c in calls.read_text().splitlines()]
    assert [c[-1] for c in got] == ["update", "ghost-pkg"]
    assert "--no-install-recommends" in got[1] and "-y" in got[1]

    again = run("ensure", env=env)
    assert again.returncode == 0 and again.stdout == "", again.stdout
    assert len(calls.read_text().splitlines()) == 2  # nothing checked or installed again

    (bin_dir / "ghost-tool").unlink()  # the tool went away: checked and installed again
    third = run("ensure", env=env)
    assert third.returncode == 0 and "ghost-pkg" in third.stdout
    assert calls.read_text().splitlines()[-1].split()[-1] == "ghost-pkg"


@needs_root
def test_debian_fails_clearly_when_apt_does_not_bring_it(tmp_path: Path, cache: str) -> None:
    osr = tmp_path / "os-release"
    osr.write_text("ID=ubuntu\nID_LIKE=debian\n")
    apt = executable(tmp_path / "apt-get", "exit 0\n")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "mirror_dists_x_main_binary-amd64_Packages").write_text("")
    lst = fake_list(tmp_path, ["ghost | - | ghost-tool --version | ghost-pkg | haunts"])
    r = run("ensure", AIMIS_SETUP_LIST=lst, AIMIS_SETUP_TOOLS=str(tmp_path / "none"), AIMIS_CACHE=cache,
            AIMIS_SETUP_OS_RELEASE=str(osr), AIMIS_SETUP_APT_GET=str(apt), AIMIS_SETUP_APT_LISTS=str(lists))
    assert r.returncode == 1
    assert "still missing after apt-get: ghost (missing)" in r.stdout


def test_tools_d_scripts_are_installed_into_the_cache_bin_and_reported(tmp_path: Path, cache: str) -> None:
    tools = tmp_path / "tools.d"
    executable(tools / "hammer.sh", """# why: hits things in the tests
case "$1" in
  check) [ -x "$AIMIS_BIN/hammer" ] && echo "$AIMIS_BIN/hammer 3.1.4" ;;
  install) echo "hammer: building"; printf '#!/bin/sh\\n' > "$AIMIS_BIN/hammer"; chmod +x "$AIMIS_BIN/hammer" ;;
esac
""")
    (tools / "README.md").write_text("not a tool\n")
    lst = fake_list(tmp_path, [])
    env = dict(os.environ, AIMIS_SETUP_LIST=lst, AIMIS_SETUP_TOOLS=str(tools), AIMIS_CACHE=cache)
    before = run("doctor", env=env)
    assert before.returncode == 1
    assert line_of(before.stdout, "hammer").split()[1] == "MISSING"
    assert "hits things in the tests" in line_of(before.stdout, "hammer")

    r = run("ensure", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "installing hammer into" in r.stdout and "hammer: building" in r.stdout
    assert (Path(cache) / "bin" / "hammer").is_file()

    after = run("doctor", env=env)
    assert after.returncode == 0, after.stdout
    assert line_of(after.stdout, "hammer").split()[1:4] == ["ok", "3.1.4", f"{cache}/bin/hammer"]


def as_user_1000(tmp_path: Path, with_sudo: bool) -> tuple[dict[str, str], Path]:
    """Environment of a non-root user on Debian whose machine lacks ghost-tool; apt-get is faked."""
    calls = tmp_path / "calls"
    fake = tmp_path / "fake"
    executable(fake / "id", f'if [ "$1" = -u ]; then echo 1000; else exec {shutil.which("id")} "$@"; fi\n')
    if with_sudo:
        executable(fake / "sudo", f'echo "sudo $*" >> {calls}; exec "$@"\n')
    apt = executable(tmp_path / "apt-get", f'echo "apt-get $*" >> {calls}\n')
    osr = tmp_path / "os-release"
    osr.write_text("ID=debian\n")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "mirror_dists_x_main_binary-amd64_Packages").write_text("")
    path = f"{fake}:{bare_path(tmp_path / 'bin', without=('id', 'sudo'))}"
    env = dict(os.environ, PATH=path, AIMIS_CACHE=str(tmp_path / "cache"),
               AIMIS_SETUP_LIST=fake_list(tmp_path, ["ghost | - | ghost-tool --version | ghost-pkg | haunts"]),
               AIMIS_SETUP_TOOLS=str(tmp_path / "none"), AIMIS_SETUP_OS_RELEASE=str(osr),
               AIMIS_SETUP_APT_GET=str(apt), AIMIS_SETUP_APT_LISTS=str(lists))
    return env, calls


def test_a_non_root_user_installs_through_sudo(tmp_path: Path) -> None:
    env, calls = as_user_1000(tmp_path, with_sudo=True)
    r = run("ensure", env=env)
    assert r.returncode == 1  # the fake apt-get brings nothing
    assert "asking sudo" in r.stdout
    first = calls.read_text().splitlines()[0].split()
    assert first[:3] == ["sudo", "env", "DEBIAN_FRONTEND=noninteractive"]
    assert first[-4:] == ["install", "-y", "--no-install-recommends", "ghost-pkg"]


def test_a_non_root_user_without_sudo_is_told_the_command(tmp_path: Path) -> None:
    env, calls = as_user_1000(tmp_path, with_sudo=False)
    r = run("ensure", env=env)
    assert r.returncode == 1
    assert r.stdout.splitlines()[-1] == (
        "setup: not root and no sudo; run as root: apt-get update && apt-get install -y --no-install-recommends ghost-pkg")
    assert not calls.exists()
