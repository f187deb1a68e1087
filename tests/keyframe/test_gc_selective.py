"""GC selective mode on the wire: the person-cell mask's adaptive coding, the latent coded with
per-position channel counts, the selective payload layout, the codec and the command line."""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from talkcodec.bitstream import BitstreamError
from talkcodec.entropy.rangecoder import encode_categorical
from talkcodec.keyframe.cli import main as keyframe_cli
from talkcodec.keyframe.gc.codec import GCCodec
from talkcodec.keyframe.gc.latent_coder import (
    decode_cell_mask,
    decode_latent,
    encode_cell_mask,
    encode_latent,
    sent_symbols,
)
from talkcodec.keyframe.gc.payload import GcPayload
from talkcodec.keyframe.gc.prior import OUTSIDE
from talkcodec.keyframe.gc.selective import person_cells

GOLDEN_GC = Path(__file__).resolve().parents[1] / "golden" / "gc_keyframe_64x48.bin"


@pytest.fixture(scope="module")
def codec() -> GCCodec:
    """Selective, 8 channels on the person and 2 elsewhere."""
    return GCCodec(selective=True, background_channels=2)


@pytest.fixture(scope="module")
def full_codec() -> GCCodec:
    return GCCodec()


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A flat background with a skin-coloured block and mild noise: (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.int64)
    image[:] = (40, 80, 120)
    image[height // 6 :, width // 4 : width // 2 + 1] = (200, 150, 120)
    return (image + rng.integers(0, 30, image.shape)).astype(np.uint8)


def _left_half(height: int, width: int) -> np.ndarray:
    """(H, W) float32 person probability: 1 on the left half, 0 on the right."""
    probability = np.zeros((height, width), np.float32)
    probability[:, : width // 2] = 1
    return probability


def _with_check(data: bytes | bytearray) -> bytes:
    """`data` with its check field recomputed, so that parsing gets past the CRC."""
    data = bytearray(data)
    data[8:10] = (zlib.crc32(bytes(data[:8] + data[10:])) & 0xFFFF).to_bytes(2, "big")
    return bytes(data)


# --- person-cell mask ---------------------------------------------------------------------------


def _reference_mask_bytes(cells: np.ndarray) -> bytes:
    """The mask coding as docs/bitstream.md states it, cell by cell."""
    counts = {(left, above): [1, 1] for left in range(3) for above in range(3)}
    bits, rows = [], []
    for y in range(cells.shape[0]):
        for x in range(cells.shape[1]):
            left = int(cells[y, x - 1]) if x else 2
            above = int(cells[y - 1, x]) if y else 2
            zeros, ones = counts[left, above]
            rows.append([zeros / (zeros + ones), ones / (zeros + ones)])
            bit = int(cells[y, x])
            bits.append(bit)
            counts[left, above][bit] += 1
    return encode_categorical(np.array(bits), np.array(rows))


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    masks = []
    for rows, columns in [(1, 1), (1, 9), (7, 1), (3, 5), (16, 16), (17, 23)]:
        blob = np.zeros((rows, columns), bool)
        blob[rows // 4 : rows - rows // 4, columns // 3 : columns - columns // 5] = True
        masks += [
            rng.random((rows, columns)) < 0.5,
            np.zeros((rows, columns), bool),
            np.ones((rows, columns), bool),
            blob,
        ]
    return masks


@pytest.mark.parametrize("cells", _masks(), ids=lambda cells: f"{cells.shape}-{cells.sum()}")
def test_cell_mask_round_trip_is_exact_and_as_documented(cells: np.ndarray) -> None:
    data = encode_cell_mask(cells)
    assert data == _reference_mask_bytes(cells)
    rows, columns = cells.shape
    decoded = decode_cell_mask(data, (rows, columns))
    assert decoded.dtype == bool and np.array_equal(decoded, cells)


def test_cell_mask_of_a_person_blob_costs_a_few_bytes() -> None:
    cells = np.zeros((16, 16), bool)
    cells[4:16, 5:12] = True
    assert len(encode_cell_mask(cells)) <= 12


def test_cell_mask_must_be_2d_bool() -> None:
    with pytest.raises(ValueError, match=r"cells must be \(h, w\) bool, got \(4, 4\) int64"):
        encode_cell_mask(np.zeros((4, 4), np.int64))


# --- latent with per-position channel counts ----------------------------------------------------


def _reference_latent_bytes(
    symbols: np.ndarray, probabilities: np.ndarray, counts: np.ndarray
) -> bytes:
    """The per-position latent coding as docs/bitstream.md states it, symbol by symbol."""
    channels, rows, columns = symbols.shape

    def neighbour(c: int, y: int, x: int) -> int:
        if c < 0 or y < 0 or x < 0 or c >= counts[y, x]:
            return OUTSIDE
        return int(symbols[c, y, x])

    coded, distributions = [], []
    for c in range(channels):
        for diagonal in range(rows + columns - 1):
            for y in range(max(0, diagonal - columns + 1), min(rows, diagonal + 1)):
                x = diagonal - y
                if c < counts[y, x]:
                    left, above, previous = (
                        neighbour(c, y, x - 1),
                        neighbour(c, y - 1, x),
                        neighbour(c - 1, y, x),
                    )
                    coded.append(symbols[c, y, x])
                    distributions.append(probabilities[c, (left * 6 + above) * 6 + previous])
    return encode_categorical(np.array(coded), np.array(distributions))


@pytest.mark.parametrize("seed", range(6))
def test_latent_with_counts_round_trips_where_sent(full_codec: GCCodec, seed: int) -> None:
    rng = np.random.default_rng(seed)
    channels = int(rng.choice([2, 4, 8]))
    shape = (channels, int(rng.integers(1, 12)), int(rng.integers(1, 12)))
    symbols = rng.integers(0, 5, shape)
    counts = rng.integers(0, channels + 1, shape[1:])
    probabilities = full_codec.prior_probabilities
    data = encode_latent(symbols, probabilities, counts)
    assert data == _reference_latent_bytes(symbols, probabilities, counts)
    decoded = decode_latent(data, probabilities, shape, counts)
    sent = sent_symbols(shape, counts)
    assert np.array_equal(decoded[sent], symbols[sent])
    assert (decoded[~sent] == 0).all()


def test_symbols_not_sent_do_not_change_the_bytes(full_codec: GCCodec) -> None:
    rng = np.random.default_rng(3)
    symbols = rng.integers(0, 5, (8, 6, 7))
    counts = np.where(rng.random((6, 7)) < 0.5, 8, 0)
    other = np.where(sent_symbols(symbols.shape, counts), symbols, 4 - symbols)
    probabilities = full_codec.prior_probabilities
    assert encode_latent(symbols, probabilities, counts) == encode_latent(
        other, probabilities, counts
    )


def test_all_channels_everywhere_codes_exactly_as_the_plain_latent(full_codec: GCCodec) -> None:
    symbols = np.random.default_rng(4).integers(0, 5, (8, 5, 9))
    probabilities = full_codec.prior_probabilities
    everywhere = np.full((5, 9), 8)
    assert encode_latent(symbols, probabilities, everywhere) == encode_latent(
        symbols, probabilities
    )


def test_counts_must_fit_the_latent(full_codec: GCCodec) -> None:
    symbols = np.zeros((4, 3, 3), np.int64)
    with pytest.raises(ValueError, match=r"counts must be \(3, 3\) integers, got \(3, 4\)"):
        encode_latent(symbols, full_codec.prior_probabilities, np.zeros((3, 4), np.int64))
    with pytest.raises(ValueError, match="counts must lie in 0..4"):
        encode_latent(symbols, full_codec.prior_probabilities, np.full((3, 3), 5))


# --- payload ------------------------------------------------------------------------------------


def test_selective_payload_layout_and_round_trip() -> None:
    payload = GcPayload(1, 8, 256, 256, b"\x12\x34", background_channels=2, mask=b"\xab\xcd\xef")
    data = bytes(payload)
    assert data[:8] == b"GC\x01\x88\x01\x00\x01\x00"  # channels byte: flag | 8
    assert data[10:13] == b"\x02\x00\x03"  # background_channels, mask length
    assert data[13:16] == b"\xab\xcd\xef" and data[16:] == b"\x12\x34"
    assert GcPayload.parse(data) == payload
    assert payload.selective and payload.latent_shape == (8, 16, 16)
    empty = GcPayload(1, 4, 16, 16, b"", background_channels=0)
    assert bytes(empty)[10:] == b"\x00\x00\x00" and GcPayload.parse(bytes(empty)) == empty


def test_plain_payloads_keep_their_bytes() -> None:
    golden = GOLDEN_GC.read_bytes()
    payload = GcPayload.parse(golden)
    assert not payload.selective and payload.background_channels is None and payload.mask == b""
    assert bytes(payload) == golden
    assert bytes(GcPayload(1, 8, 256, 256, b"\x12\x34"))[3] == 8


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x02\x00", "selective GC payload needs at least 13 bytes, got 12"),
        (
            b"\x08\x00\x00",
            "selective GC payload background channels must be below its 8 channels, found 8",
        ),
        (
            b"\x02\x00\x05\xaa\xbb",
            "selective GC payload mask of 5 bytes is truncated: 2 bytes follow its length",
        ),
    ],
)
def test_selective_parse_errors_say_what_was_wrong(body: bytes, message: str) -> None:
    data = _with_check(b"GC\x01\x88\x00\x10\x00\x10\x00\x00" + body)
    with pytest.raises(BitstreamError) as error:
        GcPayload.parse(data)
    assert str(error.value) == message


def test_selective_payload_rejects_values_it_cannot_encode() -> None:
    with pytest.raises(ValueError, match="background_channels must be in 0..3, got 4"):
        GcPayload(1, 4, 16, 16, b"", background_channels=4)
    with pytest.raises(ValueError, match="a mask needs background_channels"):
        GcPayload(1, 4, 16, 16, b"", mask=b"\x00")
    with pytest.raises(ValueError, match="channels must be in 1..127, got 128"):
        GcPayload(1, 128, 16, 16, b"")
    with pytest.raises(ValueError, match="mask must be at most 65535 bytes, got 65536"):
        GcPayload(1, 4, 16, 16, b"", background_channels=0, mask=bytes(65536))


# --- codec --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(128, 128), (37, 53), (1, 1)])
def test_selective_codec_round_trip(
    codec: GCCodec, full_codec: GCCodec, height: int, width: int
) -> None:
    image = _image(height, width)
    probability = _left_half(height, width)
    data = codec.compress(image, probability)
    payload, symbols, counts = codec.decode_latent_counts(data)
    assert payload.selective and (payload.channels, payload.background_channels) == (8, 2)
    padded = np.pad(probability, ((0, -height % 16), (0, -width % 16)), mode="edge")
    cells = person_cells(torch.from_numpy(padded)[None, None])[0].numpy()
    assert np.array_equal(counts, np.where(cells, 8, 2))
    _, all_symbols = full_codec.decode_symbols(full_codec.compress(image))
    sent = sent_symbols(symbols.shape, counts)
    assert np.array_equal(symbols[sent], all_symbols[sent]) and (symbols[~sent] == 0).all()
    assert full_codec.decompress(data).shape == image.shape  # the receiver needs no option


def test_selective_payload_is_smaller_when_the_person_covers_half(full_codec: GCCodec) -> None:
    image = _image(128, 128)
    selective = GCCodec(selective=True, background_channels=0)
    half = selective.compress(image, _left_half(128, 128))
    assert len(half) < len(full_codec.compress(image))
    assert len(GcPayload.parse(half).mask) <= 8


def test_all_person_sends_the_plain_latent_and_the_same_picture(
    codec: GCCodec, full_codec: GCCodec
) -> None:
    image = _image(64, 96)
    selective = codec.compress(image, np.ones((64, 96), np.float32))
    full = full_codec.compress(image)
    assert GcPayload.parse(selective).latent == GcPayload.parse(full).latent
    assert np.array_equal(full_codec.decompress(selective), full_codec.decompress(full))


def test_non_selective_codec_bytes_are_unchanged(full_codec: GCCodec) -> None:
    image = _image(48, 64)
    data = full_codec.compress(image, _left_half(48, 64))  # the probability is ignored
    _, symbols = full_codec.decode_symbols(data)
    assert data[3] == 8
    assert data == bytes(
        GcPayload(
            full_codec.version, 8, 48, 64, encode_latent(symbols, full_codec.prior_probabilities)
        )
    )


def test_background_channels_must_be_below_quality() -> None:
    with pytest.raises(
        ValueError,
        match=r"gc background channels must be in 0..3 \(below the 4 latent channels\), got 4",
    ):
        GCCodec(quality=4, selective=True, background_channels=4)
    with pytest.raises(ValueError, match="gc background channels must be in 0..7 .*got -1"):
        GCCodec(selective=True, background_channels=-1)


def test_person_probability_must_match_the_image(codec: GCCodec) -> None:
    with pytest.raises(
        ValueError, match=r"person probability must be \(37, 53\) like the image, got \(48, 64\)"
    ):
        codec.compress(_image(37, 53), np.zeros((48, 64), np.float32))


def test_corrupt_selective_payloads_raise_bitstream_error_only(codec: GCCodec) -> None:
    valid = codec.compress(_image(48, 64, seed=5), _left_half(48, 64))
    rng = np.random.default_rng(11)
    decoded_pictures = 0
    for trial in range(400):
        if trial % 2:
            corrupt = valid[: int(rng.integers(0, len(valid)))]
        else:
            flipped = bytearray(valid)
            for _ in range(int(rng.integers(1, 4))):
                position = int(rng.integers(0, len(valid) * 8))
                flipped[position // 8] ^= 1 << (position % 8)
            corrupt = bytes(flipped)
        if trial % 4 >= 2 and len(corrupt) >= GcPayload.HEADER_BYTES:
            corrupt = _with_check(corrupt)  # so that the parser and the decoders see the damage
        try:
            payload, symbols, counts = codec.decode_latent_counts(corrupt)
        except BitstreamError:
            continue
        assert symbols.shape == payload.latent_shape and counts.shape == symbols.shape[1:]
        if decoded_pictures < 5:
            decoded_pictures += 1
            assert codec.decompress(corrupt).shape == (payload.height, payload.width, 3)


# --- the real segmenter -------------------------------------------------------------------------


def _portrait() -> np.ndarray:
    """scikit-image's astronaut portrait (shipped in the wheel) at 128x128, RGB uint8."""
    from skimage import data

    return cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)


def test_mediapipe_segmenter_path_round_trips() -> None:
    pytest.importorskip("mediapipe")
    selective = GCCodec(quality=4, selective=True, background_channels=1)
    try:
        data = selective.compress(_portrait())
    finally:
        selective.close()
    payload, _, counts = selective.decode_latent_counts(data)
    assert payload.selective and counts.shape == (8, 8)
    assert 0 < (counts == 4).sum() < counts.size  # the astronaut is found, not everything
    assert selective.decompress(data).shape == (128, 128, 3)


def test_cli_encodes_selectively_and_reports_the_person(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mediapipe")
    source, coded, decoded = tmp_path / "face.png", tmp_path / "face.gck", tmp_path / "out.png"
    cv2.imwrite(str(source), cv2.cvtColor(_portrait(), cv2.COLOR_RGB2BGR))
    arguments = ["encode", str(source), "-o", str(coded), "--selective"]
    assert keyframe_cli([*arguments, "--background-channels", "2"]) == 0
    report = capsys.readouterr().out
    assert "latent positions person" in report and "2 background channels, mask" in report
    assert GcPayload.parse(coded.read_bytes()).background_channels == 2
    assert keyframe_cli(["decode", str(coded), "-o", str(decoded)]) == 0
    assert cv2.imread(str(decoded)).shape == (128, 128, 3)
    assert keyframe_cli(["encode", str(source), "-o", str(coded), "--background-channels", "1"])
    assert capsys.readouterr().err == "talkcodec: error: --background-channels needs --selective\n"
