"""Input from the environment and from files, checked like a workload field.

Issue 14, section 6. Every environment variable mpmarket reads, and every
file it reads, through the real command line (``python -m mpmarket`` as a
subprocess, bytes that are not UTF-8 passed as bytes): a bad value is one
line naming the variable or the file and what was expected, exit 2, never a
traceback, and never a hang (a FIFO) or a file read whole (1 GB).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mpmarket.net.authkey import ENV_VAR

pytestmark = pytest.mark.timeout(120)

KEY = "0123456789abcdef-a-test-key"
TIMEOUT_S = 60
USAGE = 2

# Commands that read an authkey; the address has no server, so a good key
# gets as far as "cannot reach" (exit 4), a bad one stops before (exit 2).
KEY_READERS = {
    "serve": ["serve", "--listen", "127.0.0.1:0"],
    "status": ["status", "--connect", "127.0.0.1:1", "--connect-timeout", "0"],
    "run --connect": ["run", "--connect", "127.0.0.1:1", "--connect-timeout", "0", "-p", "1"],
}


def _env(tmp_path: Path, **extra: str | bytes) -> dict[bytes, bytes]:
    """A clean environment as bytes: no inherited key or start method, private folders."""
    env = {
        key: value
        for key, value in os.environb.items()
        if key not in (ENV_VAR.encode(), b"MPMARKET_START_METHOD", b"MPMARKET_STRESS_SECONDS")
    }
    env[b"XDG_RUNTIME_DIR"] = os.fsencode(tmp_path / "runtime")
    env[b"HOME"] = os.fsencode(tmp_path / "home")
    for name, value in extra.items():
        env[name.encode()] = value if isinstance(value, bytes) else value.encode()
    return env


def _mpmarket(
    *args: str | Path, env: dict[bytes, bytes], timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """``python -m mpmarket ARGS``, its process group killed if it outlives ``timeout``."""
    command = [sys.executable, "-m", "mpmarket", *map(str, args)]
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,  # type: ignore[arg-type]  # bytes keys and values: os.environb
        text=True,
        errors="backslashreplace",
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _one_line(result: subprocess.CompletedProcess[str], code: int = USAGE) -> str:
    """The one error line of a refused command, checked: its exit code, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.returncode == code, result.stderr
    assert lines[0].startswith("mpmarket: error: ")
    return lines[0]


def _key_file(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


# -- MPMARKET_AUTHKEY ---------------------------------------------------------------

BAD_ENV_KEYS = {
    "not UTF-8": (b"\xff\xfe" + KEY.encode(), "is not UTF-8 text"),
    "a lone surrogate's bytes": (b"\xed\xa0\x80" + KEY.encode(), "is not UTF-8 text"),
    "control characters": (KEY.encode() + b"\x1b[31m", "holds control characters"),
    "too short": (b"short", "too short"),
    "too long": (b"k" * 5000, "too long"),
}


@pytest.mark.parametrize("command", sorted(KEY_READERS))
@pytest.mark.parametrize("case", sorted(BAD_ENV_KEYS))
def test_a_bad_key_in_the_environment_is_one_line_and_exit_2(tmp_path, command, case):
    value, message = BAD_ENV_KEYS[case]
    result = _mpmarket(*KEY_READERS[command], env=_env(tmp_path, **{ENV_VAR: value}))
    line = _one_line(result)
    assert f"${ENV_VAR}" in line and message in line
    assert KEY not in result.stderr  # never the key


def test_a_good_key_in_the_environment_gets_past_the_checks(tmp_path):
    result = _mpmarket(*KEY_READERS["status"], env=_env(tmp_path, **{ENV_VAR: KEY}))
    assert "cannot reach market" in _one_line(result, code=4)


# -- authkey files --------------------------------------------------------------------


def _fifo(path: Path) -> Path:
    os.mkfifo(path, 0o600)
    return path


def _symlink_loop(path: Path) -> Path:
    other = path.with_name(path.name + "-other")
    other.symlink_to(path)
    path.symlink_to(other)
    return path


BAD_KEY_FILES = {
    "empty": (lambda p: _key_file(p, b""), "too short"),
    "whitespace only": (lambda p: _key_file(p, b" \n\t\n"), "too short"),
    "binary": (lambda p: _key_file(p, bytes(range(256))), "is not text"),
    "NUL bytes": (lambda p: _key_file(p, b"\0" * 64), "holds control characters"),
    "a key then a second line": (
        lambda p: _key_file(p, f"{KEY}\n{KEY}\n".encode()),
        "holds control characters",
    ),
    # Sparse: 1 GiB that takes no room, and must not be read.
    "1 GiB": (lambda p: _key_file(p, b"") and os.truncate(p, 1 << 30), "too large"),
    "a FIFO no one writes to": (_fifo, "is not a regular file"),
    "a character device": (lambda p: p.symlink_to("/dev/zero"), "is not a regular file"),
    "readable by others": (lambda p: _key_file(p, KEY.encode(), 0o644), "chmod 600"),
    "a symlink loop": (_symlink_loop, "symbolic links"),
    "under a file": (lambda p: _key_file(p.parent, b"x"), "Not a directory"),
    "missing": (lambda p: None, "does not exist"),
    "a line break in its name": (lambda p: None, "does not exist"),
}


@pytest.mark.parametrize("command", ["status", "run --connect", "serve"])
@pytest.mark.parametrize("case", sorted(BAD_KEY_FILES))
def test_a_bad_key_file_is_one_line_and_exit_2(tmp_path, command, case):
    make, message = BAD_KEY_FILES[case]
    path = tmp_path / "authkey"
    if case == "under a file":
        path = tmp_path / "plain" / "authkey"
    if case == "a line break in its name":
        path = tmp_path / "auth\nkey"
    make(path)
    if command == "serve" and case in ("missing", "a line break in its name"):
        pytest.skip("serve creates a named key file that is missing")
    if command == "serve" and case == "under a file":
        message = "a file is in the way"  # serve would create it
    result = _mpmarket(*KEY_READERS[command], "--authkey-file", path, env=_env(tmp_path))
    line = _one_line(result)
    assert message in line
    assert "authkey" in line and str(path.name).replace("\n", "\\n") in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_file_is_one_line(tmp_path):
    path = _key_file(tmp_path / "authkey", KEY.encode(), 0o000)
    result = _mpmarket(*KEY_READERS["status"], "--authkey-file", path, env=_env(tmp_path))
    assert "Permission denied" in _one_line(result)


def test_serve_on_a_full_disk_leaves_no_half_key_behind(tmp_path):
    """Creating the default key file can fail on write: one line, no empty key file."""
    runtime = tmp_path / "runtime"
    env = _env(tmp_path)
    # RLIMIT_FSIZE = 0 in the child: its first write fails with EFBIG, as a full disk would.
    code = (
        "import resource, runpy, sys; "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0)); "
        "sys.argv = ['mpmarket', 'serve', '--listen', '127.0.0.1:0']; "
        "runpy.run_module('mpmarket', run_name='__main__')"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,  # type: ignore[arg-type]
        text=True,
        start_new_session=True,
    ) as process:
        try:
            _, stderr = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    result = subprocess.CompletedProcess([], process.returncode, "", stderr)
    assert "cannot write authkey file" in _one_line(result)
    assert not (runtime / "mpmarket" / "authkey").exists()


def test_serve_with_a_file_where_its_key_folder_goes_is_one_line(tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    (runtime / "mpmarket").write_text("not a folder")
    result = _mpmarket("serve", "--listen", "127.0.0.1:0", env=_env(tmp_path))
    assert "a file is in the way" in _one_line(result)


# -- XDG_RUNTIME_DIR and HOME: where the default key file is --------------------------


def test_a_relative_runtime_folder_is_ignored_and_a_relative_home_refused(tmp_path):
    env = _env(tmp_path, XDG_RUNTIME_DIR="relative", HOME="also-relative")
    result = _mpmarket("status", "--connect", "127.0.0.1:1", env=env)
    line = _one_line(result)
    assert "$HOME" in line and "not an absolute path" in line
    assert not (tmp_path / "relative").exists()


def test_a_runtime_folder_that_is_not_utf8_works(tmp_path):
    folder = os.fsencode(tmp_path) + b"/run\xff"
    os.mkdir(folder, 0o700)
    env = _env(tmp_path, XDG_RUNTIME_DIR=folder)
    result = _mpmarket(*KEY_READERS["status"], env=env)
    assert "no authkey" in _one_line(result)
    assert "run\\udcff" in result.stderr  # shown escaped, not as a traceback


# -- MPMARKET_START_METHOD ------------------------------------------------------------

BAD_METHODS = {
    "a typo": (b"sapwn", "'sapwn'"),
    "not UTF-8": (b"fork\xff", "b'fork\\xff' (not UTF-8)"),
    "another case": (b"FORK", "'FORK'"),
}


@pytest.mark.parametrize("command", [["run", "-p", "1", "-c", "1", "-q"], ["stress", "-q"]])
@pytest.mark.parametrize("case", sorted(BAD_METHODS))
def test_a_bad_start_method_in_the_environment_is_one_line_and_exit_2(tmp_path, command, case):
    value, shown = BAD_METHODS[case]
    result = _mpmarket(*command, env=_env(tmp_path, MPMARKET_START_METHOD=value))
    line = _one_line(result)
    assert "$MPMARKET_START_METHOD: expected one of fork, forkserver, spawn" in line
    assert line.endswith(f"got {shown}")
    assert result.stdout == ""  # refused before anything ran


def test_the_command_line_wins_over_a_bad_start_method_and_empty_means_unset(tmp_path):
    env = _env(tmp_path, MPMARKET_START_METHOD="bogus")
    result = _mpmarket(
        "run", "-p", "1", "-c", "1", "--sessions", "1", "-q", "--start-method", "fork", env=env
    )
    assert result.returncode == 0, result.stderr
    env = _env(tmp_path, MPMARKET_START_METHOD="")
    result = _mpmarket("run", "-p", "1", "-c", "1", "--sessions", "1", "-q", env=env)
    assert result.returncode == 0, result.stderr


def test_the_library_names_a_bad_start_method_too(monkeypatch):
    from mpmarket.proc.context import default_start_method, process_context

    monkeypatch.setenv("MPMARKET_START_METHOD", "bogus")
    with pytest.raises(ValueError, match=r"\$MPMARKET_START_METHOD: expected one of"):
        default_start_method()
    assert process_context("spawn").get_start_method() == "spawn"  # given: not read


# -- _MPMARKET_COMPLETE (click's shell completion) -------------------------------------

BAD_COMPLETIONS = {
    "a typo": (b"zsh_sourc", "'zsh_sourc'"),
    "no action": (b"bash", "'bash'"),
    "a shell click has not": (b"tcsh_source", "'tcsh_source'"),
    "not UTF-8": (b"bash_source\xff", "b'bash_source\\xff' (not UTF-8)"),
}


@pytest.mark.parametrize("case", sorted(BAD_COMPLETIONS))
def test_a_bad_completion_instruction_is_one_line_and_exit_2(tmp_path, case):
    """click exits 1 without a word on these; a shell's start-up file would hide the typo."""
    value, shown = BAD_COMPLETIONS[case]
    result = _mpmarket("run", "-q", env=_env(tmp_path, _MPMARKET_COMPLETE=value))
    line = _one_line(result)
    assert "$_MPMARKET_COMPLETE: expected SHELL_source (or SHELL_complete)" in line
    assert f"got {shown}" in line
    assert result.stdout == ""  # refused before anything ran


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_completion_script_and_a_completion_still_work(tmp_path, shell):
    script = _mpmarket(env=_env(tmp_path, _MPMARKET_COMPLETE=f"{shell}_source"))
    assert script.returncode == 0 and "_MPMARKET_COMPLETE" in script.stdout, script.stderr
    env = _env(tmp_path, _MPMARKET_COMPLETE="bash_complete", COMP_WORDS="mpmarket ru")
    env[b"COMP_CWORD"] = b"1"
    completed = _mpmarket(env=env)
    assert completed.returncode == 0, completed.stderr
    assert "plain,run" in completed.stdout.splitlines()  # click's bash answer: type,value
    assert _mpmarket("--version", env=_env(tmp_path, _MPMARKET_COMPLETE="")).returncode == 0


# -- MPMARKET_STRESS_SECONDS ----------------------------------------------------------

BAD_SECONDS = [b"abc", b"nan", b"inf", b"-1", b"0", b"1e400", b"\xff", b"10s"]


@pytest.mark.parametrize("value", BAD_SECONDS, ids=lambda v: v.decode("latin-1"))
def test_a_bad_stress_duration_in_the_environment_is_one_line_and_exit_2(tmp_path, value):
    env = _env(tmp_path, MPMARKET_STRESS_SECONDS=value)
    line = _one_line(_mpmarket("stress", "-q", env=env))
    assert "$MPMARKET_STRESS_SECONDS: expected a number of seconds above 0" in line


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_duration_that_is_not_finite_is_refused_on_the_command_line_too(tmp_path, value):
    result = _mpmarket("stress", "-q", "--duration", value, env=_env(tmp_path))
    assert result.returncode == USAGE and "Traceback" not in result.stderr
    assert "expected a finite number of seconds above 0" in result.stderr


# -- workload files ---------------------------------------------------------------------

BAD_WORKLOAD_FILES = {
    "a FIFO no one writes to": (_fifo, "expected a pipe a workload is written to"),
    "a character device": (
        lambda p: p.symlink_to("/dev/zero"),
        "expected a regular file or a pipe",
    ),
    "1 GiB": (
        lambda p: p.write_bytes(b"") or os.truncate(p, 1 << 30),
        "expected a file of at most 64 MiB",
    ),
    "binary": (lambda p: p.write_bytes(b"\xff\xfe\x00"), "expected a readable UTF-8 text file"),
    "a symlink loop": (_symlink_loop, "symbolic links"),
}


@pytest.mark.parametrize("command", [["validate"], ["simulate"], ["run", "-q"]])
@pytest.mark.parametrize("case", sorted(BAD_WORKLOAD_FILES))
def test_a_bad_workload_file_is_one_line_and_exit_2(tmp_path, command, case):
    make, message = BAD_WORKLOAD_FILES[case]
    path = tmp_path / "market.json"
    make(path)
    line = _one_line(_mpmarket(*command, path, env=_env(tmp_path)))
    assert str(path) in line and message in line


def test_a_workload_from_a_pipe_is_read(tmp_path, conformance_dir):
    """bash's ``<(...)``: a pipe with a writer is read to its end."""
    case = conformance_dir / "01.in"
    read, write = os.pipe()
    try:
        os.write(write, case.read_bytes())
        os.close(write)
        write = -1
        command = [sys.executable, "-m", "mpmarket", "validate", f"/dev/fd/{read}"]
        result = subprocess.run(
            command,
            pass_fds=(read,),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=_env(tmp_path),  # type: ignore[arg-type]
        )
    finally:
        os.close(read)
        if write != -1:
            os.close(write)
    assert result.returncode == 0, result.stderr
    assert "3 products to buy" in result.stdout
