"""The pure POSIX ACL module: xattr codec, validation, mode equivalence, chmod, inheritance."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dfs.errors import InvalidArgument
from dfs.metaserver import acl
from dfs.metaserver.acl import GROUP, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ, Entry


def raw(*entries: tuple[int, int, int], version: int = 2) -> bytes:
    """An xattr value spelled out: header, then (tag, perm, id) little-endian."""
    return struct.pack("<I", version) + b"".join(struct.pack("<HHI", *e) for e in entries)


U = 0xFFFF_FFFF  # ACL_UNDEFINED_ID
#: user::rw- user:1000:rwx group::r-- group:50:r-x mask::rwx other::---
NAMED = (
    Entry(USER_OBJ, 6),
    Entry(USER, 7, 1000),
    Entry(GROUP_OBJ, 4),
    Entry(GROUP, 5, 50),
    Entry(MASK, 7),
    Entry(OTHER, 0),
)


@st.composite
def valid_acls(draw: st.DrawFn) -> acl.Acl:
    perm = st.integers(0, 7)
    ids = st.lists(st.integers(0, U - 1), unique=True, max_size=5).map(sorted)
    users, groups = draw(ids), draw(ids)
    entries = [Entry(USER_OBJ, draw(perm))]
    entries += [Entry(USER, draw(perm), u) for u in users]
    entries.append(Entry(GROUP_OBJ, draw(perm)))
    entries += [Entry(GROUP, draw(perm), g) for g in groups]
    lone_mask = draw(st.booleans())
    if users or groups or lone_mask:
        entries.append(Entry(MASK, draw(perm)))
    entries.append(Entry(OTHER, draw(perm)))
    return tuple(entries)


# ---------------------------------------------------------------- codec
def test_decode_the_linux_layout() -> None:
    value = raw((1, 6, U), (2, 7, 1000), (4, 4, U), (8, 5, 50), (0x10, 7, U), (0x20, 0, U))
    assert acl.decode(value) == NAMED
    assert acl.encode(NAMED) == value


def test_ids_of_unnamed_entries_are_normalised() -> None:
    # getfacl tools write ACL_UNDEFINED_ID; anything else there carries no meaning.
    value = raw((1, 7, 0), (4, 5, 123), (0x20, 5, 9))
    assert acl.decode(value) == (Entry(USER_OBJ, 7), Entry(GROUP_OBJ, 5), Entry(OTHER, 5))
    assert acl.encode(acl.decode(value)) == raw((1, 7, U), (4, 5, U), (0x20, 5, U))


@given(valid_acls())
def test_codec_round_trip(entries: acl.Acl) -> None:
    value = acl.encode(entries)
    assert len(value) == 4 + 8 * len(entries)
    assert acl.decode_valid(value) == entries
    assert acl.encode(acl.decode(value)) == value


@given(st.binary(max_size=64))
def test_decode_of_random_bytes_is_an_acl_or_einval(value: bytes) -> None:
    try:
        entries = acl.decode_valid(value)
    except InvalidArgument:
        return
    assert acl.encode(entries) == acl.encode(acl.decode(value))


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x02\x00\x00",  # short header
        raw((1, 7, U), version=1),  # wrong version
        raw((1, 7, U)) + b"\x00",  # trailing byte
        raw((1, 7, U), (0x40, 7, U), (4, 5, U), (0x20, 5, U)),  # unknown tag
    ],
)
def test_malformed_values_are_einval(value: bytes) -> None:
    with pytest.raises(InvalidArgument):
        acl.decode_valid(value)


def test_header_alone_is_the_empty_acl() -> None:
    assert acl.decode_valid(raw()) == ()


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ((Entry(GROUP_OBJ, 5), Entry(OTHER, 5)), "no USER_OBJ"),
        ((Entry(USER_OBJ, 7), Entry(OTHER, 5)), "no GROUP_OBJ"),
        ((Entry(USER_OBJ, 7), Entry(GROUP_OBJ, 5)), "no OTHER"),
        (
            (Entry(USER_OBJ, 7), Entry(USER, 7, 5), Entry(GROUP_OBJ, 5), Entry(OTHER, 5)),
            "named user without mask",
        ),
        (
            (Entry(USER_OBJ, 7), Entry(GROUP_OBJ, 5), Entry(GROUP, 7, 5), Entry(OTHER, 5)),
            "named group without mask",
        ),
        (
            (Entry(USER_OBJ, 7), Entry(USER_OBJ, 7), Entry(GROUP_OBJ, 5), Entry(OTHER, 5)),
            "duplicate USER_OBJ",
        ),
        (
            (
                Entry(USER_OBJ, 7),
                Entry(USER, 7, 5),
                Entry(USER, 6, 5),
                Entry(GROUP_OBJ, 5),
                Entry(MASK, 7),
                Entry(OTHER, 5),
            ),
            "duplicate named user",
        ),
        (
            (
                Entry(USER_OBJ, 7),
                Entry(USER, 7, 9),
                Entry(USER, 6, 5),
                Entry(GROUP_OBJ, 5),
                Entry(MASK, 7),
                Entry(OTHER, 5),
            ),
            "named users out of order",
        ),
        ((Entry(GROUP_OBJ, 5), Entry(USER_OBJ, 7), Entry(OTHER, 5)), "tags out of order"),
        ((Entry(USER_OBJ, 7), Entry(GROUP_OBJ, 5), Entry(OTHER, 5), Entry(MASK, 5)), "late mask"),
        ((Entry(USER_OBJ, 8), Entry(GROUP_OBJ, 5), Entry(OTHER, 5)), "perm beyond rwx"),
        (
            (
                Entry(USER_OBJ, 7),
                Entry(USER, 7, U),
                Entry(GROUP_OBJ, 5),
                Entry(MASK, 7),
                Entry(OTHER, 5),
            ),
            "named entry with the undefined id",
        ),
    ],
)
def test_invalid_acls_are_einval(entries: acl.Acl, why: str) -> None:
    with pytest.raises(InvalidArgument):
        acl.validate(entries)
    with pytest.raises(InvalidArgument):
        acl.decode_valid(acl.encode(entries))


@given(valid_acls())
def test_generated_acls_are_valid(entries: acl.Acl) -> None:
    acl.validate(entries)


# ---------------------------------------------------------------- mode equivalence, chmod
def test_minimal_acl_is_the_mode() -> None:
    assert acl.equiv_mode(acl.from_mode(0o751)) == (0o751, True)


def test_mask_stands_for_the_group_class() -> None:
    assert acl.equiv_mode(NAMED) == (0o670, False)
    # A mask without named entries still says nothing the mode cannot (Linux drops it).
    base_mask = (Entry(USER_OBJ, 7), Entry(GROUP_OBJ, 7), Entry(MASK, 5), Entry(OTHER, 0))
    assert acl.equiv_mode(base_mask) == (0o750, True)


@given(valid_acls(), st.integers(0, 0o777))
def test_chmod_then_mode_is_the_new_mode(entries: acl.Acl, mode: int) -> None:
    changed = acl.chmod(entries, mode)
    acl.validate(changed)
    assert acl.equiv_mode(changed)[0] == mode
    # Named entries keep their permissions; only the mask limits them.
    named = [e for e in entries if e.tag in (USER, GROUP)]
    assert [e for e in changed if e.tag in (USER, GROUP)] == named


def test_chmod_changes_mask_not_owning_group() -> None:
    changed = acl.chmod(NAMED, 0o750)
    assert changed == (
        Entry(USER_OBJ, 7),
        Entry(USER, 7, 1000),
        Entry(GROUP_OBJ, 4),
        Entry(GROUP, 5, 50),
        Entry(MASK, 5),
        Entry(OTHER, 0),
    )
    assert acl.chmod(acl.from_mode(0o644), 0o750) == acl.from_mode(0o750)


# ---------------------------------------------------------------- inheritance
def test_no_default_acl_applies_the_umask() -> None:
    assert acl.inherit(None, 0o666, 0o022, is_dir=False) == acl.Inherited(0o644, None, None)
    assert acl.inherit(None, 0o777, 0o077, is_dir=True) == acl.Inherited(0o700, None, None)
    # Special bits pass (the umask may mask them too).
    assert acl.inherit(None, 0o2775, 0o002, is_dir=True).mode == 0o2775


def test_default_acl_replaces_the_umask() -> None:
    got = acl.inherit(NAMED, 0o666, 0o077, is_dir=False)
    # mode 0666 & ACL: owner rw- & rw-, mask rwx & rw- = rw-, other --- & rw- = ---.
    assert got.mode == 0o660
    assert got.access == (
        Entry(USER_OBJ, 6),
        Entry(USER, 7, 1000),
        Entry(GROUP_OBJ, 4),
        Entry(GROUP, 5, 50),
        Entry(MASK, 6),
        Entry(OTHER, 0),
    )
    assert got.default is None


def test_directories_inherit_the_default_acl() -> None:
    got = acl.inherit(NAMED, 0o777, 0o077, is_dir=True)
    assert got.mode == 0o670
    assert got.access == NAMED
    assert got.default == NAMED


def test_minimal_default_acl_gives_mode_only() -> None:
    default = acl.from_mode(0o750)
    got = acl.inherit(default, 0o666, 0o022, is_dir=False)
    assert got == acl.Inherited(0o640, None, None)
    got_dir = acl.inherit(default, 0o777, 0o022, is_dir=True)
    assert got_dir == acl.Inherited(0o750, None, default)


def test_inherited_mask_without_named_entries_is_kept() -> None:
    # posix_acl_create stores an access ACL whenever the default ACL has a mask.
    default = (Entry(USER_OBJ, 7), Entry(GROUP_OBJ, 7), Entry(MASK, 5), Entry(OTHER, 0))
    got = acl.inherit(default, 0o777, 0, is_dir=False)
    assert got.mode == 0o750
    assert got.access == default


@given(valid_acls(), st.integers(0, 0o7777), st.integers(0, 0o777), st.booleans())
def test_inheritance_matches_the_mode(
    default: acl.Acl, mode: int, umask: int, is_dir: bool
) -> None:
    got = acl.inherit(default, mode, umask, is_dir=is_dir)
    # Never more than asked for; special bits untouched; the umask plays no part.
    assert got.mode & ~mode == 0
    assert got.mode & 0o7000 == mode & 0o7000
    assert got == acl.inherit(default, mode, 0, is_dir=is_dir)
    effective = got.access if got.access is not None else acl.from_mode(got.mode)
    acl.validate(effective)
    assert acl.equiv_mode(effective)[0] == got.mode & 0o777
    assert got.default == (default if is_dir else None)
