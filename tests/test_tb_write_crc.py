"""The numpy CRC-32C of TensorBoard's event records: equal to TensorBoard's own, installed in its writer,
and what a real run writes passes TensorBoard's own checksum-verifying reader."""

from __future__ import annotations

import random

import pytest

from mlptrain.loggers import crc32c

pytestmark = pytest.mark.usefixtures("keep_threads")


def tensorboards_own():
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

    assert pywrap_tensorflow.masked_crc32c is not crc32c.masked_crc32c  # the readers keep their own
    return pywrap_tensorflow.masked_crc32c


def test_every_short_length_equals_tensorboards_crc():
    theirs, rng = tensorboards_own(), random.Random(0)
    data = rng.randbytes(3100)
    for n in range(3100):  # the per-byte loop, one row, one fold, a padded first row, ...
        assert crc32c.masked_crc32c(data[:n]) == theirs(data[:n]), n
    assert crc32c.crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C


@pytest.mark.parametrize(
    "n",
    [
        crc32c.ROW * crc32c.GROUP,  # exactly one fold
        crc32c.ROW * crc32c.GROUP + 1,
        crc32c.ROW * crc32c.GROUP**2 - 3,  # two folds, the first group padded
        100_003,
        crc32c.ROW * crc32c.GROUP**3 + 77,  # four folds
    ],
)
def test_large_buffers_equal_tensorboards_crc(n):
    data = random.Random(n).randbytes(n)
    assert crc32c.masked_crc32c(data) == tensorboards_own()(data)
    assert crc32c.masked_crc32c(bytes(n)) == tensorboards_own()(bytes(n))
    assert crc32c.masked_crc32c(b"\xff" * n) == tensorboards_own()(b"\xff" * n)


def read_verified(path):
    """Every record of an event file through TensorBoard's reader, which checks both CRCs of each."""
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow

    reader, records = pywrap_tensorflow.PyRecordReader_New(str(path)), []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return records
        records.append(reader.record())


def test_a_real_runs_event_file_passes_tensorboards_crc_check(train, tmp_path):
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.summary.writer import record_writer

    run = tmp_path / "run"
    train("trainer.epochs=2", out=run)
    assert record_writer.masked_crc32c is crc32c.masked_crc32c  # the writer took ours
    (path,) = run.glob("events.out.tfevents.*[0-9]")
    records = read_verified(path)
    events = [event_pb2.Event.FromString(r) for r in records]
    images = [v for e in events for v in e.summary.value if v.HasField("image")]
    assert images and max(len(r) for r in records) > 4 * crc32c.ROW * crc32c.GROUP  # pictures: the numpy path
    assert read_verified(run.parent / "events.out.tfevents.0.hparams")  # the experiment summary too

    # the reader does check: one flipped byte inside the largest record is refused
    raw = bytearray(path.read_bytes())
    raw[raw.index(max(records, key=len)) + 1000] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(errors.DataLossError):
        read_verified(path)
