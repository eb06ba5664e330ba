"""The authkey of a served market: where it comes from, how it is kept secret.

BaseManager authenticates a connection with an HMAC challenge over this key,
then speaks pickle: whoever holds the key can run code in the server. So the
key is never a constant, never on a command line, never printed or logged.
It comes from, in order:

1. ``--authkey-file PATH``: a file holding the key as text (surrounding
   whitespace ignored), readable by its owner only (mode 0600 or stricter);
2. the environment variable ``MPMARKET_AUTHKEY``, holding the key itself;
3. the default file (``default_key_path()``): ``$XDG_RUNTIME_DIR/mpmarket/authkey``
   when that directory is set, else ``~/.config/mpmarket/authkey``.

``mpmarket serve`` creates the file it was pointed at (or the default one)
with a fresh random key when it does not exist yet; workers only read.
``require_explicit_key`` is the policy on exposing a key: a market served
beyond loopback needs one chosen by the user, never the default file's.
Every error is an ``AuthkeyError`` naming the file or the variable, never
the key.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mpmarket.errors import AuthkeyError

__all__ = [
    "ENV_VAR",
    "MAX_KEY_FILE_BYTES",
    "MAX_KEY_LENGTH",
    "MIN_KEY_LENGTH",
    "Authkey",
    "create_key_file",
    "default_key_path",
    "load_authkey",
    "new_key_text",
    "require_explicit_key",
]

ENV_VAR = "MPMARKET_AUTHKEY"

# Keys shorter than this are refused: a guessable key hands out the server.
# Generated keys are 64 hex digits (256 random bits).
MIN_KEY_LENGTH = 16
# Keys longer than this are refused, and a key file is never read past it:
# a file that big is not a key (a log, a disk image, /dev/zero behind a link).
MAX_KEY_LENGTH = 1024
MAX_KEY_FILE_BYTES = 4096

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Authkey:
    """A key and where it came from; its repr and str never show the key."""

    secret: bytes
    origin: str  # "file" (--authkey-file), "env" or "default" (the default file)
    path: Path | None = None

    @property
    def explicit(self) -> bool:
        """Chosen by the user (a named file or the environment), not defaulted."""
        return self.origin != "default"

    def describe(self) -> str:
        """Where the key is, for messages: a path or the variable's name."""
        return str(self.path) if self.path is not None else f"${ENV_VAR}"

    def __repr__(self) -> str:
        return f"Authkey(origin={self.origin!r}, path={self.path!r})"

    __str__ = __repr__


def default_key_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``serve`` keeps its key when none is given, and workers look for it.

    ``$XDG_RUNTIME_DIR`` counts only when it is an absolute path (as the XDG
    specification says: a relative one is ignored); else the home directory,
    which must be an absolute path too (``$HOME``, else the password database).
    """
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "mpmarket" / "authkey"
    home = env.get("HOME") or _home_of_user()
    if not os.path.isabs(home):
        raise AuthkeyError(
            f"no default authkey file: the home directory is not an absolute path "
            f"($HOME is {home!r}); give --authkey-file PATH or set {ENV_VAR}"
        )
    return Path(home) / ".config" / "mpmarket" / "authkey"


def _home_of_user() -> str:
    """The home directory of the password database, or "" without an entry."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):
        return ""


def new_key_text() -> str:
    """A fresh random key as text: 64 hex digits."""
    return secrets.token_hex(32)


def _checked(text: str, where: str) -> bytes:
    key = text.strip()
    try:
        secret = key.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, from the environment
        raise AuthkeyError(f"the authkey in {where} is not UTF-8 text") from None
    if len(key) < MIN_KEY_LENGTH:
        raise AuthkeyError(
            f"the authkey in {where} is too short ({len(key)} characters, "
            f"at least {MIN_KEY_LENGTH}); make one with: python -c "
            "'import secrets; print(secrets.token_hex(32))'"
        )
    if len(key) > MAX_KEY_LENGTH:
        raise AuthkeyError(
            f"the authkey in {where} is too long ({len(key)} characters, at most {MAX_KEY_LENGTH})"
        )
    if _CONTROL.search(key):  # a NUL, an escape, a line break inside: not a key
        raise AuthkeyError(f"the authkey in {where} holds control characters")
    return secret


def _read_key_file(path: Path) -> bytes:
    """The key in ``path``: opened without blocking, checked, never read past its bound.

    The checks are made on the open file, not on its name: a FIFO never blocks
    the open (O_NONBLOCK), and what is read is what was checked.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise AuthkeyError(f"authkey file {path} does not exist") from None
    except OSError as error:
        raise AuthkeyError(f"cannot read authkey file {path}: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise AuthkeyError(f"authkey file {path} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise AuthkeyError(f"authkey file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise AuthkeyError(
                f"authkey file {path} is accessible by others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
            )
        if info.st_size > MAX_KEY_FILE_BYTES:
            raise AuthkeyError(
                f"authkey file {path} is too large ({info.st_size} bytes, a key file "
                f"holds at most {MAX_KEY_FILE_BYTES}): is it the right file?"
            )
        data = os.read(fd, MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise AuthkeyError(f"cannot read authkey file {path}: {error.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_BYTES:  # it grew since fstat
        raise AuthkeyError(f"authkey file {path} is too large (over {MAX_KEY_FILE_BYTES} bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthkeyError(f"authkey file {path} is not text") from None
    return _checked(text, str(path))


def create_key_file(path: Path) -> bytes:
    """Write a fresh random key to ``path`` (mode 0600, its folder 0700); return it.

    Refuses to replace an existing file. The file is created with its final
    mode at once (``O_EXCL``), never readable by others even for a moment.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:  # a file in the way, a read-only place
        reason = "a file is in the way" if isinstance(error, FileExistsError) else error.strerror
        raise AuthkeyError(
            f"cannot create the folder {path.parent} of authkey file {path}: {reason}"
        ) from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise AuthkeyError(f"authkey file {path} already exists") from None
    except OSError as error:
        raise AuthkeyError(f"cannot create authkey file {path}: {error.strerror}") from None
    text = new_key_text()
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text + "\n")
    except OSError as error:  # a full disk, a file size limit: leave no half key behind
        path.unlink(missing_ok=True)
        raise AuthkeyError(f"cannot write authkey file {path}: {error.strerror}") from None
    return text.encode()


def load_authkey(
    key_file: Path | None, *, create: bool = False, environ: dict[str, str] | None = None
) -> tuple[Authkey, bool]:
    """The key to use, and whether it was just created.

    ``key_file`` (an explicit ``--authkey-file``) wins over ``MPMARKET_AUTHKEY``,
    which wins over the default file. With ``create`` (``serve``), a missing
    file, named or default, is created with a fresh random key.
    """
    env = os.environ if environ is None else environ
    if key_file is not None:
        if create and not os.path.lexists(key_file):
            return Authkey(create_key_file(key_file), "file", key_file), True
        return Authkey(_read_key_file(key_file), "file", key_file), False
    if env.get(ENV_VAR):
        return Authkey(_checked(env[ENV_VAR], f"${ENV_VAR}"), "env"), False
    path = default_key_path(environ)
    if create and not os.path.lexists(path):
        return Authkey(create_key_file(path), "default", path), True
    if not path.exists():
        raise AuthkeyError(
            f"no authkey: give --authkey-file PATH or set {ENV_VAR} "
            f"(mpmarket serve writes one to {path})"
        )
    return Authkey(_read_key_file(path), "default", path), False


def require_explicit_key(
    where: str,
    key_file: Path | None,
    *,
    loopback: Callable[[], bool],
    environ: Mapping[str, str] | None = None,
) -> None:
    """Refuse to serve at ``where`` beyond loopback without an explicit key.

    Whoever holds the key can run code in the server, so a market that other
    machines may reach needs a key the user chose: ``key_file``
    (``--authkey-file``) or ``MPMARKET_AUTHKEY``. ``loopback()`` says whether
    the listening address is a loopback one; it is asked only when no
    explicit key was given (it may resolve a name). AuthkeyError otherwise.
    """
    env = os.environ if environ is None else environ
    explicit = key_file is not None or bool(env.get(ENV_VAR))
    if not explicit and not loopback():
        raise AuthkeyError(
            f"refusing to listen on {where} without an explicit authkey: "
            f"give --authkey-file PATH or set {ENV_VAR} (whoever holds the key can run code "
            "in the server)"
        )
