"""Stream an image onto a target: large aligned writes, fsync, then read back and compare hashes.

Decompression runs in a thread (lzma releases the GIL) while this thread hashes and writes (hashlib and
os.write release it too), so the two cores work side by side. Memory stays bounded: a few blocks in
flight.
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import threading
from dataclasses import dataclass

from picluster.stages.image import ImageError
from picluster.stages.image.progress import Progress
from picluster.stages.image.source import ImageSource

BLOCK = 4 << 20          # bytes per write: a multiple of any sector and erase-block size that matters
QUEUE_BLOCKS = 4
VERIFY_BLOCK = 8 << 20


@dataclass(frozen=True)
class Written:
    size: int
    sha256: str


def _blocks(source: ImageSource, out: queue.Queue[bytes | bytearray | BaseException | None],
            stop: threading.Event) -> None:
    """Fill `out` with BLOCK-sized pieces of the image (the last may be shorter), then None."""
    try:
        buf = bytearray()
        for chunk in source.chunks(BLOCK):
            if stop.is_set():
                return
            if not buf and len(chunk) == BLOCK:
                out.put(chunk)      # the common case with the xz program: no copy
                continue
            buf += chunk
            while len(buf) >= BLOCK:
                out.put(bytes(buf[:BLOCK]))
                del buf[:BLOCK]
        if buf:
            out.put(bytes(buf))
        out.put(None)
    except BaseException as err:  # handed to the writing thread, which raises it
        out.put(err)


def write_image(source: ImageSource, target: str, progress: Progress, *, create: bool, devno: str = "") -> Written:
    """Write the whole image to `target` (a device, or a file to create) and fsync it.

    `devno` (major:minor) is the device the user confirmed: a device opened under another number is refused.
    """
    # A disk is opened exclusively: Linux then refuses it while a partition is mounted or otherwise in use.
    flags = os.O_WRONLY | (os.O_CREAT | os.O_TRUNC if create else os.O_EXCL)
    try:
        fd = os.open(target, flags, 0o644)
    except OSError as err:
        raise ImageError(f"cannot open {target} for writing: {err.strerror}", code=1) from None
    st = os.fstat(fd)
    block_device = stat.S_ISBLK(st.st_mode)
    number = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if block_device else "not a block device"
    if devno and number != devno:
        os.close(fd)
        raise ImageError(f"refusing to write {target}: it is now {number}, not the device {devno} you confirmed; "
                         "nothing was written", code=1)
    pieces: queue.Queue[bytes | bytearray | BaseException | None] = queue.Queue(QUEUE_BLOCKS)
    stop = threading.Event()
    worker = threading.Thread(target=_blocks, args=(source, pieces, stop), daemon=True, name="decompress")
    h = hashlib.sha256()
    size = 0
    progress.start("write", source.size)
    try:
        worker.start()
        while True:
            piece = pieces.get()
            if piece is None:
                break
            if isinstance(piece, BaseException):
                raise piece
            view = memoryview(piece)
            h.update(view)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            size += len(piece)
            progress.advance(len(piece))
        os.fsync(fd)
        if block_device:
            _reread_partitions(fd)
    except OSError as err:
        raise ImageError(f"writing {target} failed at byte {size}: {err.strerror}; "
                         f"{target} is partly written and will not boot", code=1) from None
    finally:
        stop.set()
        os.close(fd)
        progress.finish()
        # Unblock and drain the decompressor if we stopped early.
        while worker.is_alive():
            try:
                pieces.get(timeout=0.1)
            except queue.Empty:
                pass
    if size != source.size:
        raise ImageError(f"{source.path} gave {size} bytes, its index says {source.size}", code=1)
    return Written(size=size, sha256=h.hexdigest())


def _reread_partitions(fd: int) -> None:
    """Tell the kernel the partition table changed (BLKRRPART), so /dev/sdX1 is the new system-boot."""
    import fcntl

    try:
        fcntl.ioctl(fd, 0x125F)   # BLKRRPART
    except OSError:
        pass                      # busy or unsupported: the next plug-in reads it anyway


def read_back_sha256(target: str, size: int, progress: Progress) -> str:
    """The sha256 of the first `size` bytes of `target`, read from the medium (page cache dropped)."""
    h = hashlib.sha256()
    buf = bytearray(VERIFY_BLOCK)
    view = memoryview(buf)
    left = size
    fd = os.open(target, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        progress.start("verify", size)
        while left:
            n = os.readv(fd, [view[:min(left, VERIFY_BLOCK)]])
            if n == 0:
                raise ImageError(f"{target} ends after {size - left} of {size} bytes", code=1)
            h.update(view[:n])
            left -= n
            progress.advance(n)
    finally:
        os.close(fd)
        progress.finish()
    return h.hexdigest()


def verify(target: str, written: Written, progress: Progress) -> None:
    """Read the written bytes back and compare; ImageError when they differ."""
    got = read_back_sha256(target, written.size, progress)
    if got != written.sha256:
        raise ImageError(f"verify failed: {target} reads back with sha256 {got}, wrote {written.sha256}; "
                         "the disk may be failing", code=1)
