import numpy as np

from recembed.corpus import format_padded, token_table


def test_token_table_is_the_decimal_text():
    packed, lens = token_table(123_457)
    for x in (0, 7, 9, 10, 99, 100, 4321, 99_999, 100_000, 123_456):
        text = int(packed[x]).to_bytes(8, "little")[: lens[x]].decode()
        assert text == str(x)


def test_format_padded_writes_rows_of_two_or_more_codes_and_counts_them():
    packed, lens = token_table(100_000)
    rows = np.array([[7, 12345, 99_999, -1], [3, -1, -1, -1], [0, 10, 100, 1000]], np.int32)
    text, lines, tokens = format_padded(rows, packed, lens)
    assert text.tobytes() == b"7 12345 99999\n0 10 100 1000\n"
    assert (lines, tokens) == (2, 7)
