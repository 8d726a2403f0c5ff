#!/usr/bin/env python3
"""Judges an Autobahn TestSuite fuzzingclient report of the service built
with the `echo` feature, which sends every message back.

    summarize.py REPORT_DIR [AGENT]

Reads REPORT_DIR/index.json and the per-case JSON files it points to, and
prints:

1. for each case group (1.x, 2.x, ...), how many cases got each verdict,
   the worse of Autobahn's two (behaviour, closing);
2. every case that is not OK: its verdicts, what it sends, the outcome
   Autobahn wants for OK and what the server did, and Autobahn's word on
   the closing when that is not OK;
3. the cases where the server dropped TCP without the Close frame
   (1002/1007) that failing a connection should send, and those that
   ended without a clean close handshake: Autobahn accepts both where
   it fails the connection, so its verdicts do not show them; and how
   many cases got each close code from the server.

Exits 0 if every case passes: both verdicts in ACCEPTED, or UNIMPLEMENTED
in the groups of UNIMPLEMENTED_GROUPS, or a behaviour verdict excused by
ALLOWED_FAILURES with its reason; 1 otherwise, or if the report is empty.
"""

import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

# The verdicts that pass.
ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}
# Compression (permessage-deflate), which the service does not offer; run.sh
# leaves these groups out.
UNIMPLEMENTED_GROUPS = {12, 13}
# Cases whose behaviour may fail, and why; their closing is still judged.
SEVERAL_PINGS = (
    "several pings, one pong: the service answers the latest ping only, "
    "which RFC 6455 (5.5.3) allows, so that no client can queue up pongs"
)
ALLOWED_FAILURES = {"2.10": SEVERAL_PINGS, "2.11": SEVERAL_PINGS}

# The table's verdicts; of a case's two, the later one here is shown. Any
# other (FAILED, WRONG CODE, UNCLEAN, ...) counts as FAILED.
RANKED = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]


def case_key(case_id):
    return tuple(int(part) for part in case_id.split("."))


def group_of(case_id):
    return case_key(case_id)[0]


def worse(first, second):
    rank = {verdict: n for n, verdict in enumerate(RANKED)}
    return max(first, second, key=lambda verdict: rank.get(verdict, len(RANKED)))


def passes(case_id, case):
    """Whether the case passes, and the reason from ALLOWED_FAILURES when
    that is what lets it pass."""
    accepted = ACCEPTED | (
        {"UNIMPLEMENTED"} if group_of(case_id) in UNIMPLEMENTED_GROUPS else set()
    )
    if case["behaviorClose"] not in accepted:
        return False, None
    if case["behavior"] in accepted:
        return True, None
    reason = ALLOWED_FAILURES.get(case_id)
    return reason is not None, reason


def first_sentence(html, width=80):
    """What a case sends: the first sentence of its description."""
    text = " ".join(re.sub(r"<[^>]+>", " ", html or "").split())
    text = re.sub(r"\s+([,.])", r"\1", text)
    text = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")
    text = re.sub(r"^Send ", "", text)
    return text if len(text) <= width else text[: width - 1] + "…"


def show_event(event):
    """One event as Autobahn records it: a message (payload, binary), a
    pong, or a wait that ended without the server closing."""
    kind, payload = event[0], event[1] if len(event) > 1 else ""
    if kind == "timeout":
        return "wait %s" % payload
    if len(payload) > 16:
        payload = payload[:15] + "…"
    return "%s %r" % (kind, payload) if payload else kind


def show_events(events, close):
    shown = [show_event(event) for event in events]
    if len(shown) > 4:
        shown = ["%d events: %s" % (len(shown), shown[0])] + shown[1:2] + ["…"] + shown[-1:]
    return ", ".join(shown + [close])


def outcome(case):
    """The outcome Autobahn wanted for OK, and the server's."""
    wanted_close = (case.get("expectedClose") or {}).get("closeCode", [])
    wanted = show_events(
        (case.get("expected") or {}).get("OK", []),
        "close " + "/".join(str(code) for code in wanted_close),
    )
    code = case.get("remoteCloseCode")
    got = show_events(case.get("received") or [], "no close" if code is None else "close %d" % code)
    return wanted, got


def server_sent_close(case):
    """Whether a Close frame came from the server: from the wire log, or,
    where the case turned it off (9.x), from what the client recorded."""
    frames = [entry for entry in case.get("wirelog") or [] if entry[0] == "RF"]
    if any(frame[2] == 8 for frame in frames):
        return True
    return case.get("remoteCloseCode") is not None or (
        case.get("closedByMe") and case.get("wasClean")
    )


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[3].strip())
    outdir = Path(sys.argv[1])
    index = json.loads((outdir / "index.json").read_text())
    agent = sys.argv[2] if len(sys.argv) == 3 else next(iter(index))
    cases = {}
    for case_id, entry in index[agent].items():
        report = outdir / entry["reportfile"]
        cases[case_id] = json.loads(report.read_text()) if report.exists() else entry
    order = sorted(cases, key=case_key)

    print("Autobahn fuzzingclient report %s, agent %r: %d cases" % (outdir, agent, len(cases)))
    print()
    by_group = defaultdict(Counter)
    for case_id in order:
        case = cases[case_id]
        verdict = worse(case["behavior"], case["behaviorClose"])
        by_group[group_of(case_id)][verdict if verdict in RANKED else "FAILED"] += 1
    header = ["group"] + RANKED + ["total"]
    rows = [
        ["%d.x" % group] + [counts[v] for v in RANKED] + [sum(counts.values())]
        for group, counts in sorted(by_group.items())
    ]
    totals = ["all"] + [sum(row[i] for row in rows) for i in range(1, len(header))]
    print_table(header, rows + [totals])

    print()
    print("Cases not OK: verdicts (behaviour / closing), what the case sends, the")
    print("outcome Autobahn wants for OK and the server's.")
    failures = []
    for case_id in order:
        case = cases[case_id]
        if case["behavior"] == "OK" and case["behaviorClose"] == "OK":
            continue
        passed, reason = passes(case_id, case)
        if not passed:
            failures.append(case_id)
        wanted, got = outcome(case)
        print()
        print("%-7s %s / %s%s" % (case_id, case["behavior"], case["behaviorClose"],
                                  "" if passed else "  <- fails the run"))
        print("        sends:  %s" % first_sentence(case.get("description")))
        print("        OK is:  %s" % wanted)
        print("        server: %s" % got)
        if case["behaviorClose"] != "OK":
            print("        closing: %s" % case.get("resultClose"))
        if reason:
            print("        allowed: %s" % reason)

    print()
    dropped = [
        case_id for case_id in order
        if not server_sent_close(cases[case_id]) and not cases[case_id].get("droppedByMe")
        and {1002, 1007} & set((cases[case_id].get("expectedClose") or {}).get("closeCode", []))
    ]
    print("The server dropped TCP without the Close frame that was due (1002/1007):",
          ", ".join(dropped) or "in no case")
    unclean = [case_id for case_id in order if not cases[case_id].get("wasClean")]
    print("The connection ended without a clean close handshake:",
          ", ".join(unclean) or "in no case")
    codes = Counter(case.get("remoteCloseCode") for case in cases.values())
    print("The server's close codes:", ", ".join(
        "%s in %d" % ("none" if code is None else code, n)
        for code, n in sorted(codes.items(), key=lambda item: item[0] or 0)))

    print()
    if not cases:
        print("FAIL: the report has no cases")
        sys.exit(1)
    if failures:
        print("FAIL: %d of %d cases: %s" % (len(failures), len(cases), ", ".join(failures)))
        sys.exit(1)
    print("PASS: all %d cases" % len(cases))


def print_table(header, rows):
    cells = [[str(c) for c in row] for row in [header] + rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
