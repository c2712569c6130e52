"""txl.core.log: the library's messages, printed by the command line on stderr as written."""

import logging

from txl.core.log import ROOT, setup


def test_messages_go_to_stderr_as_written_and_warnings_say_so(capsys):
    setup(logging.INFO)
    setup(logging.INFO)  # a second call adds no second handler
    logging.getLogger("txl.some.module").info("[1/2] training")
    logging.getLogger("txl.study.results").warning("line 3 is not JSON")
    logging.getLogger("elsewhere").info("not ours")
    assert capsys.readouterr().err.splitlines() == ["[1/2] training", "warning: line 3 is not JSON"]


def test_a_quiet_level_keeps_warnings_alone(capsys):
    setup(logging.WARNING)
    logging.getLogger("txl.search.search").info("[3] refined")
    logging.getLogger("txl.study.results").warning("2 damaged lines left out")
    assert capsys.readouterr().err.splitlines() == ["warning: 2 damaged lines left out"]
    setup(logging.INFO)
    assert logging.getLogger(ROOT).level == logging.INFO
