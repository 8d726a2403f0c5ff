#!/usr/bin/env python3
"""Summarizes an Autobahn TestSuite fuzzingclient report.

    summarize.py REPORT_DIR [AGENT]

Reads REPORT_DIR/index.json and the per-case JSON files it points to, and
prints:

1. for each case group (1.x, 2.x, ...), how many cases Autobahn judged OK,
   NON-STRICT, FAILED, INFORMATIONAL or UNIMPLEMENTED, how many of its
   cases expect an echo (the service sends none, so those fail by design),
   and how many of the others failed (those are the ones to look at);
2. a table of the protocol cases: 3.x (reserved bits), 4.x (opcodes),
   7.x (closing), 9.x (limits: the service closes with 1009 over its limit),
   and those of 2.x (ping/pong), 5.x (fragmentation) and 6.x (invalid UTF-8)
   that need no echo, with what the server was expected to do, the close
   code it sent, whether the close handshake completed, how the connection
   ended and Autobahn's verdicts;
3. findings over all cases: where the server dropped TCP without the Close
   frame (1002/1007) that failing a connection should send, where it closed
   with 1009, and which cases failed though they need no echo.

Autobahn accepts a dropped TCP connection in place of a 1002/1007 Close in
the cases that expect one, so the verdicts alone do not show it.
"""

import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

VERDICTS = ["OK", "NON-STRICT", "FAILED", "INFORMATIONAL", "UNIMPLEMENTED"]
# Groups in the table of cases: 2.x-7.x, but of 2.x, 5.x and 6.x only the
# cases that need no echo; 9.x for the close the service sends (1009) when a
# message is over its limit.
TABLE_GROUPS = {2, 3, 4, 5, 6, 7, 9}
ALWAYS_SHOWN_GROUPS = {3, 4, 7, 9}
PASSED = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}


def case_key(case_id):
    return tuple(int(part) for part in case_id.split("."))


def expects_echo(case):
    """Whether every outcome Autobahn accepts includes a data message back.
    Cases that judge for themselves (9.x) list no outcomes: their
    expectation text says."""
    outcomes = case.get("expected") or {}
    if not outcomes:
        return "echo" in (case.get("expectation") or "").lower()
    return all(
        any(event[0] == "message" for event in events)
        for events in outcomes.values()
    )


# Shorter wording for the case descriptions, applied in order.
SHORTER = [
    (r"^Send ", ""),
    (r"^Same as Case ", "as "),
    (r"small text message, then send (again|frame) with", r"text, then \1 with"),
    (r"message message", "message"),
    (r"a text message with payload which is not valid UTF-8 in one fragment",
     "invalid UTF-8 text"),
    (r"[Tt]ext [Mm]essage", "text"),
    (r"binary message", "binary"),
    (r"Continuation Frame", "continuation"),
    (r"\(?where there is nothing to continue\)?", "with nothing to continue"),
    (r"fragmented into", "in"),
    (r"with (message )?payload of length", "of"),
    (r"reserved non-control", "reserved data"),
]


def one_line(html, width):
    """The first sentence of a case's description, shortened, with the
    payload that some 6.x cases name after it."""
    text = " ".join(re.sub(r"<[^>]+>", " ", html or "").split())
    text = re.sub(r"\s+([,.])", r"\1", text)
    payload = re.search(r"Payload: (0x[0-9a-f]+)", text)
    pieces = re.search(r"Sent out (?:data )?in (fragments|chops) of (\d+)", text)
    text = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")
    for pattern, replacement in SHORTER:
        text = re.sub(pattern, replacement, text)
    if payload:
        text += " " + payload.group(1)
    if pieces:
        text += ", in %s of %s" % pieces.groups()
    return text if len(text) <= width else text[: width - 1] + "…"


def expectation(case):
    """What the server should do, from Autobahn's own expectations."""
    close = case.get("expectedClose") or {}
    codes = "/".join(str(c) for c in close.get("closeCode", []))
    control = sorted(
        {event[0] for events in (case.get("expected") or {}).values() for event in events}
        - {"message"}
    )
    parts = ["echo"] if expects_echo(case) else []
    parts += control
    if close.get("closedByMe") is False:
        parts.append("fail conn. (%s)" % codes)
    elif close.get("requireClean"):
        parts.append("clean close (%s)" % codes)
    else:
        parts.append("close (%s)" % codes)
    return ", ".join(parts)


def failed(case):
    """Whether Autobahn failed the case, for its behaviour or its closing."""
    return case["behavior"] not in PASSED or case["behaviorClose"] not in PASSED


def server_sent_close(case):
    """Whether a Close frame came from the server: from the wire log, or,
    where the case turned it off (9.x), from what the client recorded."""
    frames = [entry for entry in case.get("wirelog") or [] if entry[0] == "RF"]
    if any(frame[2] == 8 for frame in frames):
        return True
    return case.get("remoteCloseCode") is not None or (
        case.get("closedByMe") and case.get("wasClean")
    )


def show_code(code):
    return "no code" if code is None else code


def ending(case):
    """How the connection ended, from the client's point of view."""
    if case.get("wasOpenHandshakeTimeout"):
        return "no opening handshake"
    code = show_code(case.get("remoteCloseCode"))
    answered = server_sent_close(case)
    if case.get("closedByMe"):
        how = "client closed (%s), " % show_code(case.get("localCloseCode"))
        if answered:
            how += "server answered (%s)" % code
        elif case.get("droppedByMe"):
            how += "no answer, client dropped TCP"
        else:
            how += "server dropped TCP, no Close"
        if case.get("wasCloseHandshakeTimeout"):
            how += " (timeout)"
        return how
    if answered:
        how = "server closed (%s)" % code
        if case.get("wasServerConnectionDropTimeout"):
            how += ", then did not drop TCP"
        return how
    if case.get("droppedByMe"):
        return "client dropped TCP"
    return "server dropped TCP, no Close"


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[2].strip())
    outdir = Path(sys.argv[1])
    index = json.loads((outdir / "index.json").read_text())
    agent = sys.argv[2] if len(sys.argv) == 3 else next(iter(index))
    results = index[agent]

    cases = {}
    for case_id, entry in results.items():
        report = outdir / entry["reportfile"]
        cases[case_id] = json.loads(report.read_text()) if report.exists() else entry

    by_group = defaultdict(Counter)
    echo_cases = Counter()
    failed_without_echo = Counter()
    for case_id, case in cases.items():
        group = case_key(case_id)[0]
        by_group[group][case["behavior"]] += 1
        echo = expects_echo(case)
        echo_cases[group] += echo
        failed_without_echo[group] += not echo and failed(case)

    print("Autobahn fuzzingclient report %s, agent %r: %d cases" % (outdir, agent, len(cases)))
    print()
    header = ["group"] + VERDICTS + ["other", "total", "expect echo", "failed w/o echo"]
    rows = []
    for group in sorted(by_group):
        counts = by_group[group]
        other = sum(n for verdict, n in counts.items() if verdict not in VERDICTS)
        rows.append(["%d.x" % group] + [counts[v] for v in VERDICTS]
                    + [other, sum(counts.values()), echo_cases[group],
                       failed_without_echo[group]])
    totals = ["all"] + [sum(row[i] for row in rows) for i in range(1, len(header))]
    print_table(header, rows + [totals])

    print()
    print("Protocol cases: 3.x, 4.x, 7.x and 9.x, and the cases of 2.x, 5.x and 6.x")
    print("that need no echo. 'code' is the close code the server sent, 'clean' whether")
    print("the close handshake completed; the verdicts are Autobahn's: behaviour / closing.")
    print()
    header = ["case", "sent", "expected", "code", "clean", "ending", "verdict"]
    rows = []
    for case_id in sorted(cases, key=case_key):
        case = cases[case_id]
        group = case_key(case_id)[0]
        if group not in TABLE_GROUPS:
            continue
        if group not in ALWAYS_SHOWN_GROUPS and expects_echo(case):
            continue
        code = case.get("remoteCloseCode")
        rows.append([
            case_id,
            one_line(case.get("description"), 56),
            expectation(case),
            "-" if code is None else code,
            "yes" if case.get("wasClean") else "no",
            ending(case),
            "%s / %s" % (case["behavior"], case["behaviorClose"]),
        ])
    print_table(header, rows)

    print()
    print("Findings (all cases):")
    no_close = [
        case_id for case_id, case in cases.items()
        if not server_sent_close(case) and not case.get("droppedByMe")
        and {1002, 1007} & set((case.get("expectedClose") or {}).get("closeCode", []))
    ]
    print("- the server dropped TCP without a Close frame where 1002/1007 was due:",
          count_by_group(no_close))
    too_big = [case_id for case_id, case in cases.items()
               if case.get("remoteCloseCode") == 1009
               and case.get("localCloseCode") != 1009]  # not an echo of 7.7.7's
    clean = [case_id for case_id in too_big if cases[case_id].get("wasClean")]
    print("- the server closed with 1009 (message too big): %s, %d of them cleanly"
          % (count_by_group(too_big), len(clean)))
    failures = sorted((case_id for case_id, case in cases.items()
                       if failed(case) and not expects_echo(case)), key=case_key)
    print("- failed, though no echo is expected:", ", ".join(failures) or "none")


def count_by_group(case_ids):
    """'N cases (3.x: a, 4.x: b, ...)' for a list of case ids."""
    groups = Counter("%d.x" % case_key(case_id)[0] for case_id in case_ids)
    detail = ", ".join("%s: %d" % (group, n) for group, n in
                       sorted(groups.items(), key=lambda item: int(item[0][:-2])))
    return "%d cases" % len(case_ids) + (" (%s)" % detail if detail else "")


def print_table(header, rows):
    cells = [[str(c) for c in row] for row in [header] + rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
