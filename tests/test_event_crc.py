"""event_crc: TensorBoard's checksums, bit for bit, by google-crc32c's C code, and event files TensorBoard's
reader accepts."""

from __future__ import annotations

import random
from pathlib import Path

import google_crc32c
import pytest
import tensorboard.summary.writer.record_writer as record_writer
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

from lightning_svi.logging import event_crc
from lightning_svi.logging.tensorboard_logger import BufferedTensorBoardLogger


@pytest.mark.parametrize("length", [0, 1, 8, 63, 64, 65, 700, 3000, 4095, 4096, 4097, 20000])
def test_the_checksum_is_tensorboards_at_every_length(length: int) -> None:
    generator = random.Random(length)
    for _ in range(3):
        data = bytes(generator.randrange(256) for _ in range(length))
        assert event_crc.crc32c(data) == pywrap_tensorflow.crc32c(data)
        assert event_crc.masked_crc32c(data) == pywrap_tensorflow.masked_crc32c(data)


def test_known_answer() -> None:
    assert event_crc.crc32c(b"123456789" * 8) == pywrap_tensorflow.crc32c(b"123456789" * 8)
    assert event_crc.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_event_files_written_with_it_pass_tensorboards_checks(tmp_path: Path) -> None:
    logger = BufferedTensorBoardLogger(save_dir=str(tmp_path), name="tensorboard", version="")
    assert google_crc32c.implementation == "c"  # the wheel's compiled code, not its slow Python fallback
    assert record_writer.masked_crc32c is event_crc.masked_crc32c  # the records below are checksummed by it
    tags = {f"theta/a_rather_long_parameter_name/{index}": float(index) for index in range(40)}  # > 64 bytes
    for step in range(1, 4):
        logger.log_metrics(tags, step=step)
    logger.finalize("success")
    (path,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    reader = pywrap_tensorflow.PyRecordReader_New(str(path))  # raises DataLossError on a bad checksum
    records = 0
    while True:
        try:
            reader.GetNext()
        except Exception as error:  # the stub reader ends with OutOfRangeError
            assert type(error).__name__ == "OutOfRangeError", error
            break
        records += 1
    assert records == 4  # the file version record and one event per step
