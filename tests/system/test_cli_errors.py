"""The programs' command lines: a user's mistake is one line on stderr and exit status 2."""

import pytest

from temposplit.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--structure", "bi-4"], "odd size"),
        (["demo", "--coder", "lzma"], "unknown coder"),
        (["demo", "--video", "/nonexistent/clip.avi"], "not found"),
        (["edge", "/nonexistent/clip.avi"], "not found"),
        (["edge", __file__, "--server", "nohost"], "host:port"),
        (["demo", "--dead-zone", "-1"], "dead zone"),
        # The codec options are checked first, before the source is opened or the model loads.
        (["edge", "/nonexistent/clip.avi", "--dead-zone", "-1"], "dead zone"),
        (["serve", "--weights", "no-equals-sign", "--port", "0"], "MODEL=PATH"),
    ],
)
def test_bad_options_and_files_give_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("temposplit ")


def test_a_port_out_of_range_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--port", "99999"])
    assert exc.value.code == 2
    assert "0..65535" in capsys.readouterr().err
