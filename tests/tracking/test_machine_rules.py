"""MachineRules remembers what it decided about a user agent; the verdicts stay those of the rules."""

from __future__ import annotations

from clarion.tracking import machine
from clarion.tracking.machine import MachineRules, RequestFacts

HUMAN_UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"


def _rules() -> MachineRules:
    return MachineRules(scanner_click_seconds=10, extra_agents=["AcmeGuard"])


def test_a_remembered_agent_gets_the_same_verdict_and_the_address_is_still_checked() -> None:
    rules = _rules()
    cases = [(HUMAN_UA, "198.51.100.7", None), (HUMAN_UA, "17.58.1.1", "machine_network"),
             ("Mozilla/5.0 (compatible; Barracuda Sentinel)", "198.51.100.7", "scanner"),
             ("acmeguard/2.0", "198.51.100.7", "scanner"), ("  ", "198.51.100.7", "no_user_agent"),
             ("GoogleImageProxy", "198.51.100.7", "image_proxy"), ("curl/8.0", None, "bot")]
    for _ in range(3):  # first decided, then remembered
        for agent, ip, reason in cases:
            verdict = rules.classify_open(RequestFacts("GET", agent, ip))
            assert (verdict.machine, verdict.reason) == (reason is not None, reason), (agent, ip)
    assert rules.classify_open(RequestFacts("HEAD", HUMAN_UA, "198.51.100.7")).reason == "head_request"
    assert rules.classify_open(RequestFacts("GET", HUMAN_UA, None, "prefetch")).reason == "prefetch"


def test_what_is_remembered_is_bounded() -> None:
    rules = _rules()
    huge = "Mozilla/5.0 " + "x" * 5000
    assert not rules.classify_open(RequestFacts("GET", huge, None)).machine
    assert huge not in rules._agent_verdicts  # a flood of huge headers must not fill memory
    for n in range(machine._CACHED_AGENTS + 10):
        rules.classify_open(RequestFacts("GET", f"{HUMAN_UA} #{n}", None))
    assert 0 < len(rules._agent_verdicts) <= machine._CACHED_AGENTS
    assert rules.classify_open(RequestFacts("GET", "Mozilla/5.0 (compatible; Barracuda)", None)).reason == "scanner"
