"""The in.php parameter parser (a property test: total, always a protocol answer) and the
task store (ids routable by node, bounded, expiry on a driven clock)."""

from __future__ import annotations

import base64
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from solverfleet.agent.compat.answers import PARSE_ERRORS
from solverfleet.agent.compat.methods import TaskSpec, parse_task
from solverfleet.agent.compat.tasks import (
    FAILED,
    SOLVED,
    SUFFIX_DIGITS,
    Task,
    TaskStore,
    id_pattern,
)

NAMES = ["method", "version", "googlekey", "sitekey", "publickey", "pageurl", "gt",
         "challenge", "body", "action", "min_score", "proxy", "data[blob]", "surl", "numeric",
         "json", "key", "soft_id"]  # fmt: skip
METHODS = ["userrecaptcha", "hcaptcha", "turnstile", "funcaptcha", "geetest", "post", "base64",
           "USERRECAPTCHA", "", "nope"]  # fmt: skip
VALUES = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["https://x.test/", "http://a", "ftp://x", "v3", "v2", "6Lc-key_1", " "]),
    st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
)
FIELDS = st.dictionaries(
    st.one_of(st.sampled_from(NAMES), st.text(max_size=10)),
    st.one_of(VALUES, st.none(), st.integers(), st.binary(max_size=10)),
    max_size=10,
).flatmap(
    lambda d: st.one_of(st.just(d), st.sampled_from(METHODS).map(lambda m: {**d, "method": m}))
)
FILES = st.one_of(
    st.just({}), st.fixed_dictionaries({"file": st.one_of(st.binary(max_size=400), st.none())})
)


@settings(max_examples=400, deadline=None)
@given(FIELDS, FILES)
def test_parser_never_raises_and_always_answers_in_protocol_terms(fields, files):
    result = parse_task(fields, files)
    if isinstance(result, str):
        assert result in PARSE_ERRORS
        return
    assert isinstance(result, TaskSpec)
    assert result.slug in {"recaptcha-v2", "recaptcha-v3", "hcaptcha", "turnstile",
                           "funcaptcha", "geetest", "image-to-text"}  # fmt: skip
    assert result.url is None or result.url.lower().startswith(("http://", "https://"))
    assert all(isinstance(v, str) for v in result.params.values())
    body = result.for_worker()
    assert set(body) == {"type", "url", "params"}


def test_version_v3_and_unknown_version():
    base = {"method": "userrecaptcha", "googlekey": "k", "pageurl": "https://x.test/"}
    assert parse_task(base).slug == "recaptcha-v2"
    assert parse_task({**base, "version": "V3"}).slug == "recaptcha-v3"
    assert parse_task({**base, "version": "v4"}) == "ERROR_BAD_PARAMETERS"


def test_image_size_bounds():
    assert parse_task({"method": "post"}, {"file": b"x" * 99}) == "ERROR_ZERO_CAPTCHA_FILESIZE"
    assert parse_task({"method": "post"}, {"file": b"x" * 100}).slug == "image-to-text"
    assert parse_task({"method": "post"}, {"file": b"x" * (100 * 1024)}).slug == "image-to-text"
    too_big = {"file": b"x" * (100 * 1024 + 1)}
    assert parse_task({"method": "post"}, too_big) == "ERROR_TOO_BIG_CAPTCHA_FILESIZE"
    data_url = "data:image/png;base64," + base64.b64encode(b"y" * 200).decode()
    assert parse_task({"method": "base64", "body": data_url}).slug == "image-to-text"


# ---- task store --------------------------------------------------------------------------


def _task(task_id):
    return Task(task_id, "k", None, None, "127.0.0.1", 0.0)


def test_ids_are_numeric_and_carry_the_node_id():
    for node in (1, 7, 42, 999):
        store = TaskStore(node, ttl=10, cap=100)
        ids = [store.add(_task).id for _ in range(50)]
        assert len(set(ids)) == 50
        for task_id in ids:
            assert re.fullmatch(id_pattern(node), task_id) and int(task_id) < 2**53
            assert len(task_id) == len(str(node)) + SUFFIX_DIGITS
            # no other node's pattern matches: the LB routes it to exactly one server
            assert [n for n in range(1, 1000) if re.fullmatch(id_pattern(n), task_id)] == [node]


def test_store_is_bounded_and_expires_on_its_clock():
    now = [0.0]
    store = TaskStore(5, ttl=60, cap=2, clock=lambda: now[0])
    a, b = store.add(_task), store.add(_task)
    assert store.add(_task) is None  # full
    store.finish(a, True, "answer", 10)
    store.finish(b, False, None, 10)
    now[0] = 59.9
    assert store.expired() == [] and len(store) == 2
    now[0] = 60
    assert store.expired() == [a]  # solved, never delivered: its hold is still open
    assert (a.state, b.state, a.gone, b.gone) == (SOLVED, FAILED, True, True)
    assert store.get(a.id) is None and len(store) == 0
    assert not store.claim_delivery(a)  # expired: can never be charged any more
    assert store.add(_task) is not None


def test_delivery_is_claimed_once():
    store = TaskStore(5, ttl=60, cap=2)
    task = store.add(_task)
    assert not store.claim_delivery(task)  # pending
    store.finish(task, True, "x", 1)
    assert store.claim_delivery(task) and not store.claim_delivery(task)
    store.end_delivery(task, recorded=False)  # disk refused: may be claimed again
    assert store.claim_delivery(task)
    store.end_delivery(task, recorded=True)
    assert task.delivered and not store.claim_delivery(task)
    assert store.take_for_restart() == ([], [])  # delivered: nothing to keep or release
