"""Shared pieces of dataset import/export: the error type, atomic output directories, parquet columns as
numpy arrays, and mp4 encode/decode with PyAV."""
from __future__ import annotations

import contextlib
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np


class DatasetError(ValueError):
    """Bad input data: the message names the file (and the episode) at fault."""


@contextlib.contextmanager
def atomic_output_dir(out: str | Path) -> Iterator[Path]:
    """A temporary sibling directory that becomes ``out`` only when the ``with`` block completes.

    ``out`` must not exist or be an empty directory: an import or export never mixes with, or replaces,
    existing data. On any error the temporary directory is removed, so nothing half-written is left."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out} exists and is not an empty directory: refusing to write into it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def column_to_numpy(column: Any, shape: Sequence[int], where: str, name: str) -> np.ndarray:
    """A parquet column (scalar, list or fixed-size list, possibly nested) -> ``(rows, *shape)`` array.

    ``shape == (1,)`` (LeRobot's scalar features) gives ``(rows,)``. A row with another number of values
    than ``shape`` holds is an error naming ``where`` (file and episode) and the feature."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    rows = len(arr)
    while True:
        if isinstance(arr.type, pa.ExtensionType):
            arr = arr.storage
        elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
            arr = arr.flatten()
        else:
            break
    if arr.null_count:
        raise DatasetError(f"{where}: feature {name!r} has {arr.null_count} missing values")
    values = arr.to_numpy(zero_copy_only=False)
    per_row = int(np.prod(shape))
    if values.size != rows * per_row:
        got = values.size / rows if rows else 0
        raise DatasetError(f"{where}: feature {name!r} holds {got:g} values per frame, info.json declares "
                           f"shape {list(shape)}")
    return values.reshape((rows,) if tuple(shape) == (1,) else (rows, *shape))


class VideoWriter:
    """An mp4 of ``(H, W, 3)`` uint8 RGB frames (h264, yuv420p: what LeRobot records and decodes); frame ``i``
    gets presentation time ``i / fps`` exactly, so several episodes can follow each other in one file.

    ``gop`` = keyframe interval: LeRobot uses 2 so a training sampler can seek to any frame cheaply."""

    def __init__(self, path: Path, fps: int, crf: int = 18, codec: str = "libx264", gop: int = 2) -> None:
        import av

        self.path, self.fps, self.crf, self.codec, self.gop = Path(path), int(fps), int(crf), codec, int(gop)
        self.container = av.open(str(self.path), mode="w", format="mp4")
        self.stream: Any = None
        self.frames = 0
        self._yuv = av.video.reformatter.VideoReformatter()  # reused: see VideoReader

    def add(self, frame: np.ndarray) -> None:
        import av

        if self.stream is None:
            h, w = frame.shape[:2]
            if h % 2 or w % 2:
                raise DatasetError(f"{self.path}: yuv420p video needs even image sizes, got {w}x{h}")
            self.stream = self.container.add_stream(self.codec, rate=self.fps)
            self.stream.width, self.stream.height, self.stream.pix_fmt = w, h, "yuv420p"
            self.stream.codec_context.time_base = Fraction(1, self.fps)
            self.stream.options = {"crf": str(self.crf), "g": str(self.gop), "preset": "medium"}
        elif frame.shape[:2] != (self.stream.height, self.stream.width):
            raise DatasetError(f"{self.path}: frame of {frame.shape[1]}x{frame.shape[0]} in a "
                               f"{self.stream.width}x{self.stream.height} video")
        vf = self._yuv.reformat(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, np.uint8), format="rgb24"),
                                format="yuv420p")
        vf.pts, vf.time_base = self.frames, Fraction(1, self.fps)
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        try:
            if self.stream is not None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()


def encode_video(path: Path, frames: Iterator[np.ndarray], fps: int, crf: int = 18) -> int:
    """Write frames to ``path`` (see :class:`VideoWriter`); returns how many."""
    writer = VideoWriter(path, fps, crf)
    try:
        for frame in frames:
            writer.add(frame)
    finally:
        writer.close()
    return writer.frames


class VideoReader:
    """Frames of one mp4 at given timestamps (seconds), nearest frame within a tolerance.

    One reader per file is kept open across episodes: a v3.0 file holds many episodes back to back, and
    decoding continues from where the previous episode ended instead of seeking again when it can."""

    def __init__(self, path: Path) -> None:
        import av

        self.path = Path(path)
        try:
            self.container = av.open(str(self.path))
            self.stream = self.container.streams.video[0]
        except (av.error.FFmpegError, IndexError, OSError) as e:
            raise DatasetError(f"{self.path}: not a readable video: {e}") from e
        self.stream.thread_type = "AUTO"
        # one reformatter for every frame: ``frame.to_ndarray(format=...)`` builds a new swscale context per call,
        # which costs ~70x the conversion itself at robot camera sizes
        self._rgb = av.video.reformatter.VideoReformatter()
        self._frames: Iterator[Any] | None = None
        self._pending: tuple[float, Any] | None = None  # a decoded frame past the last episode's end

    def close(self) -> None:
        self.container.close()

    def frames_at(self, timestamps: np.ndarray, tolerance_s: float, where: str) -> np.ndarray:
        """``(N,)`` seconds -> ``(N, H, W, 3)`` uint8 RGB; a timestamp with no frame within ``tolerance_s`` is
        an error naming ``where``. ``timestamps`` must be non-decreasing."""
        import av

        if len(timestamps) == 0:
            raise DatasetError(f"{where}: no timestamps to decode")
        first, last = float(timestamps[0]), float(timestamps[-1])
        times: list[float] = []
        images: list[np.ndarray] = []
        try:
            if self._pending is None or self._pending[0] > first + tolerance_s:
                offset = max(0, int(first / float(self.stream.time_base)))
                self.container.seek(offset, stream=self.stream, backward=True, any_frame=False)
                self._frames = self.container.decode(self.stream)
                self._pending = None
            if self._pending is not None:
                pending, self._pending = self._pending, None
                candidates: Iterator[tuple[float, Any]] = _chain([pending], self._timed(self._frames))
            else:
                candidates = self._timed(self._frames)
            for t, frame in candidates:
                if t < first - tolerance_s:
                    continue
                if t > last + tolerance_s:
                    self._pending = (t, frame)
                    break
                times.append(t)
                images.append(self._rgb.reformat(frame, format="rgb24").to_ndarray())
        except av.error.FFmpegError as e:
            self._pending = None
            raise DatasetError(f"{where}: cannot decode video {self.path}: {e}") from e
        if not times:
            raise DatasetError(f"{where}: video {self.path} has no frames between {first:.4f} s and {last:.4f} s")
        t_arr = np.asarray(times)
        idx = np.clip(np.searchsorted(t_arr, timestamps), 1, len(t_arr) - 1) if len(t_arr) > 1 else \
            np.zeros(len(timestamps), np.int64)
        if len(t_arr) > 1:  # nearest of the two neighbours
            left = np.abs(t_arr[idx - 1] - timestamps) <= np.abs(t_arr[idx] - timestamps)
            idx = np.where(left, idx - 1, idx)
        err = np.abs(t_arr[idx] - timestamps)
        if err.max() > tolerance_s:
            k = int(err.argmax())
            raise DatasetError(f"{where}: video {self.path} has no frame within {tolerance_s} s of "
                               f"t={timestamps[k]:.4f} s (nearest {t_arr[idx[k]]:.4f} s): frames missing or "
                               f"timestamps out of sync")
        return np.stack([images[i] for i in idx])

    @staticmethod
    def _timed(frames: Iterator[Any]) -> Iterator[tuple[float, Any]]:
        for frame in frames:
            if frame.time is not None:
                yield float(frame.time), frame


def _chain(first: list[Any], rest: Iterator[Any]) -> Iterator[Any]:
    yield from first
    yield from rest
