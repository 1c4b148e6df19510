"""One exception type for mistakes the user can fix.

The CLI turns a UserError into a single line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""


STORAGE_ERRNOS = {28: "no space left on the device", 30: "the filesystem is read-only",
                  122: "the disk quota is exceeded"}  # ENOSPC, EROFS, EDQUOT (Linux numbers)


def storage_error(exc: BaseException) -> UserError | None:
    """A full, read-only or over-quota filesystem as one line naming the path and the fix; None
    for any other error."""
    import errno

    codes = {errno.ENOSPC: STORAGE_ERRNOS[28], errno.EROFS: STORAGE_ERRNOS[30],
             getattr(errno, "EDQUOT", 122): STORAGE_ERRNOS[122]}
    if not isinstance(exc, OSError) or exc.errno not in codes:
        return None
    where = exc.filename or "the results directory"
    return UserError(f"cannot write {where}: {codes[exc.errno]}; free space (or make it writable, or give "
                     "--results on another filesystem) and rerun the same command to resume")
