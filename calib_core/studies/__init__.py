"""Studies: many runs planned to answer one question, each with the same shape (study.py): a plan (or dry run),
a resumable run, a report, and the command that remakes it. The paper's reproduction (reproduce, its report
reproduce_report), the strategy tournament (tournament, tournament_report and the protocol and comparisons it
states) and the advisor (advisor ranks candidate sets; advisor_validation measures how well it can)."""
