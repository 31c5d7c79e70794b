"""POSIX access control lists in the Linux xattr format (pure: no I/O, no state).

An ACL lives in one of two xattrs of an inode: ``system.posix_acl_access`` (checked by the
kernel on every access, with ``default_permissions``) and ``system.posix_acl_default`` (on
directories only: what new children inherit).  The value is what ``setfacl`` hands the
kernel and the kernel hands FUSE (``include/uapi/linux/posix_acl_xattr.h``): a header
``u32 version == 2`` then entries ``{u16 tag, u16 perm, u32 id}``, all little-endian.

Rules kept here, as Linux keeps them (``fs/posix_acl.c``):

* a valid ACL has one ``USER_OBJ``, one ``GROUP_OBJ``, one ``OTHER``, sorted by tag and, for
  named ``USER``/``GROUP`` entries, by strictly increasing id; a ``MASK`` is required once a
  named entry exists (``validate``, ``posix_acl_valid``);
* the access ACL and the mode bits are one piece of state: the owner bits are ``USER_OBJ``,
  the group bits are ``MASK`` (``GROUP_OBJ`` without a mask), the other bits ``OTHER``.  An
  access ACL that says nothing more than the mode is not stored at all (``equiv_mode``,
  ``posix_acl_equiv_mode``/``posix_acl_update_mode``);
* chmod rewrites those three entries (``chmod``, ``__posix_acl_chmod``);
* a new inode under a directory with a default ACL takes that ACL as its access ACL with the
  requested mode ANDed in, and the umask is *not* applied; a new directory also inherits the
  default ACL.  Without a default ACL the mode is ``mode & ~umask`` (``inherit``,
  ``posix_acl_create``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dfs.errors import InvalidArgument

XATTR_ACCESS = b"system.posix_acl_access"
XATTR_DEFAULT = b"system.posix_acl_default"
ACL_NAMES = frozenset({XATTR_ACCESS, XATTR_DEFAULT})

VERSION = 2
USER_OBJ = 0x01
USER = 0x02
GROUP_OBJ = 0x04
GROUP = 0x08
MASK = 0x10
OTHER = 0x20
#: The id stored for the entries that name no one (``ACL_UNDEFINED_ID``).
UNDEFINED_ID = 0xFFFF_FFFF
READ, WRITE, EXECUTE = 4, 2, 1

_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
#: Position of each tag in a sorted ACL (the order ``posix_acl_valid`` accepts).
_ORDER = {USER_OBJ: 0, USER: 1, GROUP_OBJ: 2, GROUP: 3, MASK: 4, OTHER: 5}
_NAMED = (USER, GROUP)


@dataclass(frozen=True, slots=True)
class Entry:
    tag: int
    perm: int
    #: uid for ``USER``, gid for ``GROUP``; ``UNDEFINED_ID`` for the other tags.
    id: int = UNDEFINED_ID


Acl = tuple[Entry, ...]


def decode(value: bytes) -> Acl:
    """Parse an xattr value (the entries are not validated: see ``validate``).

    A header without entries is the empty ACL (Linux reads it as "no ACL").
    ``InvalidArgument`` for a wrong version, a truncated value or an unknown tag.
    """
    if len(value) < _HEADER.size or (len(value) - _HEADER.size) % _ENTRY.size:
        raise InvalidArgument(f"ACL xattr of {len(value)} bytes is not a header and entries")
    (version,) = _HEADER.unpack_from(value)
    if version != VERSION:
        raise InvalidArgument(f"ACL xattr version {version}, expected {VERSION}")
    acl = []
    for tag, perm, ident in _ENTRY.iter_unpack(value[_HEADER.size :]):
        if tag not in _ORDER:
            raise InvalidArgument(f"unknown ACL tag {tag:#x}")
        acl.append(Entry(tag, perm, ident if tag in _NAMED else UNDEFINED_ID))
    return tuple(acl)


def encode(acl: Acl) -> bytes:
    """The xattr value of ``acl`` (ids of unnamed entries written as ``UNDEFINED_ID``)."""
    parts = [_HEADER.pack(VERSION)]
    parts.extend(_ENTRY.pack(e.tag, e.perm, e.id if e.tag in _NAMED else UNDEFINED_ID) for e in acl)
    return b"".join(parts)


def validate(acl: Acl) -> None:
    """Raise ``InvalidArgument`` unless ``acl`` is a well-formed, sorted, complete ACL."""
    seen: dict[int, int] = {}
    last: tuple[int, int] | None = None
    for e in acl:
        if e.tag not in _ORDER:
            raise InvalidArgument(f"unknown ACL tag {e.tag:#x}")
        if e.perm & ~(READ | WRITE | EXECUTE):
            raise InvalidArgument(f"ACL permission {e.perm:#o} has bits beyond rwx")
        key = (_ORDER[e.tag], e.id if e.tag in _NAMED else 0)
        if e.tag in _NAMED and not 0 <= e.id < UNDEFINED_ID:
            raise InvalidArgument(f"ACL entry names id {e.id}")
        if last is not None and key <= last:
            what = "duplicate" if key == last else "unsorted"
            raise InvalidArgument(f"{what} ACL entry (tag {e.tag:#x}, id {e.id})")
        last = key
        seen[e.tag] = seen.get(e.tag, 0) + 1
    for tag, name in ((USER_OBJ, "USER_OBJ"), (GROUP_OBJ, "GROUP_OBJ"), (OTHER, "OTHER")):
        if tag not in seen:
            raise InvalidArgument(f"ACL has no {name} entry")
    if (USER in seen or GROUP in seen) and MASK not in seen:
        raise InvalidArgument("ACL with named entries has no MASK entry")


def decode_valid(value: bytes) -> Acl:
    """``decode`` then ``validate`` (the empty ACL passes: it means "remove")."""
    acl = decode(value)
    if acl:
        validate(acl)
    return acl


def _perm(acl: Acl, tag: int) -> int | None:
    for e in acl:
        if e.tag == tag:
            return e.perm
    return None


def equiv_mode(acl: Acl) -> tuple[int, bool]:
    """The permission bits (0o777) ``acl`` implies, and whether it is equivalent to them
    (no named entry: the mode alone says everything, so nothing needs to be stored)."""
    user = _perm(acl, USER_OBJ) or 0
    group = _perm(acl, MASK)
    if group is None:
        group = _perm(acl, GROUP_OBJ) or 0
    other = _perm(acl, OTHER) or 0
    equivalent = not any(e.tag in _NAMED for e in acl)
    return user << 6 | group << 3 | other, equivalent


def from_mode(mode: int) -> Acl:
    """The minimal ACL of permission bits ``mode``."""
    return (
        Entry(USER_OBJ, mode >> 6 & 7),
        Entry(GROUP_OBJ, mode >> 3 & 7),
        Entry(OTHER, mode & 7),
    )


def _class_shift(tag: int, has_mask: bool) -> int | None:
    """Where the mode keeps the bits of an entry of ``tag`` (None: a named entry, or the
    owning group when a mask stands for the group class)."""
    if tag == USER_OBJ:
        return 6
    if tag == MASK or (tag == GROUP_OBJ and not has_mask):
        return 3
    if tag == OTHER:
        return 0
    return None


def chmod(acl: Acl, mode: int) -> Acl:
    """``acl`` after a chmod to ``mode``: the owner, mask (or owning group without a mask)
    and other entries take the new bits; named entries keep theirs (the mask limits them)."""
    has_mask = any(e.tag == MASK for e in acl)
    out = []
    for e in acl:
        shift = _class_shift(e.tag, has_mask)
        out.append(e if shift is None else Entry(e.tag, mode >> shift & 7, e.id))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Inherited:
    """What a new inode gets from its directory (``inherit``)."""

    #: The permission and special bits (no file type bits).
    mode: int
    #: Its access ACL, or None when the mode says it all.
    access: Acl | None
    #: Its default ACL (new directories only), or None.
    default: Acl | None


def inherit(parent_default: Acl | None, mode: int, umask: int, *, is_dir: bool) -> Inherited:
    """Mode and ACLs of a new inode created with ``mode`` (permission and special bits) and
    ``umask`` under a directory whose default ACL is ``parent_default``."""
    if not parent_default:
        return Inherited(mode & ~umask & 0o7777, None, None)
    # Each of owner, group class and other: the ACL entry and the mode bits both become
    # their intersection; the group class is the mask when there is one.
    has_mask = any(e.tag == MASK for e in parent_default)
    out = []
    for e in parent_default:
        shift = _class_shift(e.tag, has_mask)
        if shift is None:
            out.append(e)
            continue
        perm = e.perm & (mode >> shift & 7)
        mode &= ~(7 << shift) | perm << shift
        out.append(Entry(e.tag, perm, e.id))
    access = tuple(out)
    # Unlike a setxattr, a mask alone makes the inherited ACL worth storing (Linux keeps it).
    equivalent = not any(e.tag in (USER, GROUP, MASK) for e in access)
    return Inherited(
        mode & 0o7777,
        None if equivalent else access,
        parent_default if is_dir else None,
    )
