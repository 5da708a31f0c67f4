"""The CRC-32C checksums of TensorBoard's event records, without a Python loop per byte.

TensorBoard's writer (without TensorFlow) checksums every record in pure Python, about 0.2 µs per
byte: a logging step's event of a few hundred bytes cost 0.1-0.2 ms, a histogram's close to 1 ms,
a large share of a small model's logging step. The CRC is linear over GF(2), so the checksum of
``data`` is the XOR of one precomputed contribution per (byte value, distance from the end),
gathered and reduced by numpy in a few µs. Records longer than the precomputed distances (images)
go through TensorBoard's own function.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorboard.summary.writer.record_writer as record_writer
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

MAX_FAST_BYTES = 4096  # the tables take 4 MiB; longer records (images, large histograms) use the slow path
MIN_FAST_BYTES = 64  # below this the table lookups cost more than TensorBoard's loop
_MASK_DELTA = 0xA282EAD8


@functools.cache
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """``contribution[d, v]``: the CRC register after byte ``v`` followed by ``d`` zero bytes, from a
    zero register; ``initial[n]``: the register after ``n`` zero bytes from the all-ones start."""
    table = np.array(pywrap_tensorflow.CRC_TABLE, dtype=np.uint32)

    def zero_byte(register: np.ndarray) -> np.ndarray:
        return table[register & 0xFF] ^ (register >> 8)

    contribution = np.empty((MAX_FAST_BYTES, 256), dtype=np.uint32)
    initial = np.empty(MAX_FAST_BYTES + 1, dtype=np.uint32)
    contribution[0] = table
    initial[0] = 0xFFFFFFFF
    for distance in range(1, MAX_FAST_BYTES):
        contribution[distance] = zero_byte(contribution[distance - 1])
    register = np.array([0xFFFFFFFF], dtype=np.uint32)
    for length in range(1, MAX_FAST_BYTES + 1):
        register = zero_byte(register)
        initial[length] = register[0]
    return contribution, initial


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as ``pywrap_tensorflow.crc32c`` computes it."""
    length = len(data)
    if not MIN_FAST_BYTES <= length <= MAX_FAST_BYTES:
        return pywrap_tensorflow.crc32c(data)
    contribution, initial = _tables()
    values = np.frombuffer(data, dtype=np.uint8)
    register = np.bitwise_xor.reduce(contribution[np.arange(length - 1, -1, -1), values])
    return int(register ^ initial[length] ^ 0xFFFFFFFF)


def masked_crc32c(data: bytes) -> int:
    """The masked checksum TensorBoard's record format stores (``pywrap_tensorflow.masked_crc32c``)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def install() -> None:
    """Make TensorBoard's record writer use ``masked_crc32c``: the same bytes on disk, sooner."""
    record_writer.masked_crc32c = masked_crc32c
