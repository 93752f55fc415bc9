"""The provider choice on its own: suffixes, the `provider` object, candidates, order,
health and measured speed (contract section 9). End to end: tests/e2e/test_routing.py."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routstr_node.config import DataCollection, MintsSection, ModelConfig, Settings, UpstreamConfig
from routstr_node.pricing import ModelPrice, max_cost_msat
from routstr_node.routing import (
    DOWN_AFTER_FAILURES,
    NO_PREFERENCES,
    InvalidProvider,
    ModelUnavailable,
    NoProviderAvailable,
    Preferences,
    ProviderBoard,
    ProviderStatus,
    Sort,
    Variant,
    choose,
    find_model,
    parse_preferences,
    request_parameters,
)
from routstr_node.routing.board import RETRY_DOWN_AFTER_S

NAMES = ("a", "b", "c")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def routed(**per_provider: dict[str, Any]) -> ModelConfig:
    """A model sold through the providers named, in that order, with their keys."""
    return ModelConfig(
        id="m",
        context_length=1000,
        max_output_tokens=100,
        providers=[{"upstream": name, **keys} for name, keys in per_provider.items()],
    )


THREE = routed(
    a={"input_sat_per_1m": 300, "output_sat_per_1m": 300},
    b={"input_sat_per_1m": 100, "output_sat_per_1m": 100, "zdr": True, "online": True},
    c={
        "input_sat_per_1m": 200,
        "output_sat_per_1m": 200,
        "data_collection": "deny",
        "thinking": True,
        "supported_parameters": ["temperature"],
    },
)


def prices_of(model: ModelConfig) -> tuple[ModelPrice, ...]:
    return tuple(
        ModelPrice.from_config(model, Settings(mints=MINTS).pricing, None, o) for o in model.offers
    )


MINTS = MintsSection(trusted=["http://mint"])


def most(price: ModelPrice) -> int:
    return max_cost_msat(price, 10, 10)


def route_names(
    model: ModelConfig = THREE,
    board: ProviderBoard | None = None,
    *,
    variant: Variant | None = None,
    preferences: Preferences = NO_PREFERENCES,
    body: dict[str, Any] | None = None,
) -> list[str]:
    route = choose(
        model,
        prices_of(model),
        most,
        board or ProviderBoard(),
        variant=variant,
        preferences=preferences,
        body=body,
    )
    return [c.name for c in route.candidates]


# --- the model and its suffix ---------------------------------------------------------------


def test_a_suffix_picks_a_variant_and_an_id_with_a_colon_is_a_model() -> None:
    settings = Settings(
        mints=MINTS,
        upstreams=[UpstreamConfig(name=n, base_url=f"http://{n}") for n in NAMES],
        models=[
            THREE,
            ModelConfig(id="llama:8b", upstream="a", context_length=9, max_output_tokens=9),
        ],
    )
    assert find_model(settings, "m") == (THREE, None)
    assert find_model(settings, "m:floor")[1] is Variant.FLOOR
    assert find_model(settings, "m:thinking")[1] is Variant.THINKING
    assert find_model(settings, "llama:8b")[0].id == "llama:8b"
    for unknown in ("m:free", "m:", "n:floor", "llama", "llama:8b:nitro:x"):
        with pytest.raises(ModelUnavailable):
            find_model(settings, unknown)


# --- the provider object --------------------------------------------------------------------


def test_a_full_provider_object_is_read() -> None:
    preferences = parse_preferences(
        {
            "order": ["c", "a"],
            "only": ["a", "c"],
            "ignore": ["b"],
            "allow_fallbacks": False,
            "sort": "throughput",
            "data_collection": "deny",
            "zdr": True,
            "require_parameters": True,
        },
        NAMES,
    )
    assert preferences == Preferences(
        order=("c", "a"),
        only=frozenset({"a", "c"}),
        ignore=frozenset({"b"}),
        allow_fallbacks=False,
        sort=Sort.THROUGHPUT,
        data_collection=DataCollection.DENY,
        zdr=True,
        require_parameters=True,
    )
    assert parse_preferences(None, NAMES) is NO_PREFERENCES
    assert parse_preferences({}, NAMES) == NO_PREFERENCES
    assert parse_preferences({"sort": None, "only": None}, NAMES) == NO_PREFERENCES


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ("a", "provider"),
        (["a"], "provider"),
        ({"order": "a"}, "provider.order"),
        ({"order": [1]}, "provider.order"),
        ({"order": ["a", "a"]}, "provider.order"),
        ({"only": []}, "provider.only"),
        ({"only": ["nope"]}, "provider.only"),
        ({"ignore": ["a", None]}, "provider.ignore"),
        ({"allow_fallbacks": "false"}, "provider.allow_fallbacks"),
        ({"allow_fallbacks": 0}, "provider.allow_fallbacks"),
        ({"sort": "cheapest"}, "provider.sort"),
        ({"sort": {"by": "price"}}, "provider.sort"),
        ({"data_collection": "never"}, "provider.data_collection"),
        ({"zdr": 1}, "provider.zdr"),
        ({"require_parameters": "yes"}, "provider.require_parameters"),
        ({"quantizations": ["fp8"]}, "provider.quantizations"),
    ],
)
def test_a_malformed_provider_object_names_its_field(value: Any, param: str) -> None:
    with pytest.raises(InvalidProvider) as caught:
        parse_preferences(value, NAMES)
    assert caught.value.param == param
    assert caught.value.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
field_values = st.one_of(
    json_values,
    st.lists(st.sampled_from([*NAMES, "x"]), max_size=4),
    st.sampled_from(["price", "throughput", "latency", "allow", "deny"]),
)


@given(
    st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(
                [
                    *("order", "only", "ignore", "allow_fallbacks", "sort", "data_collection"),
                    *("zdr", "require_parameters", "max_price"),
                ]
            ),
            field_values,
        ),
    )
)
def test_any_provider_object_is_read_or_refused_naming_a_field(value: Any) -> None:
    """Whatever a client sends, the answer is preferences or InvalidProvider naming the
    object or one of its fields: never another error."""
    try:
        preferences = parse_preferences(value, NAMES)
    except InvalidProvider as refused:
        assert refused.param == "provider" or (
            isinstance(value, dict) and refused.param.removeprefix("provider.") in value
        )
        return
    assert isinstance(preferences, Preferences)
    assert set(preferences.order) <= set(NAMES)
    assert preferences.only is None or (preferences.only and preferences.only <= set(NAMES))


def test_request_parameters_leave_out_the_request_itself() -> None:
    body = {
        "model": "m",
        "messages": [],
        "stream": True,
        "stream_options": {},
        "provider": {},
        "temperature": 0.5,
        "tools": [],
        "top_p": None,
    }
    assert request_parameters(body) == {"temperature", "tools"}


# --- candidates and their order ---------------------------------------------------------------


def test_default_order_is_node_toml_and_the_reservation_covers_every_candidate() -> None:
    route = choose(THREE, prices_of(THREE), most, ProviderBoard())
    assert [c.name for c in route.candidates] == ["a", "b", "c"]
    assert (
        route.reserve_msat
        == max(c.most_msat for c in route.candidates)
        == most(prices_of(THREE)[0])
    )
    assert [c.most_msat for c in route.candidates] == [6, 2, 4]


def test_floor_sorts_by_price_and_nitro_by_measured_throughput() -> None:
    assert route_names(variant=Variant.FLOOR) == ["b", "c", "a"]
    assert route_names(preferences=Preferences(sort=Sort.PRICE)) == ["b", "c", "a"]
    board = ProviderBoard()
    assert route_names(board=board, variant=Variant.NITRO) == ["a", "b", "c"]  # none measured
    board.generated("c", "m", 100, 1.0)  # 100 tokens/s
    board.generated("b", "m", 100, 0.5)  # 200 tokens/s
    assert route_names(board=board, variant=Variant.NITRO) == ["b", "c", "a"]
    board.generated("a", "other-model", 10_000, 1.0)  # another model's speed does not count
    assert route_names(board=board, variant=Variant.NITRO) == ["b", "c", "a"]
    board.answered("c", "m", 0.01)
    board.answered("a", "m", 0.5)
    assert route_names(board=board, preferences=Preferences(sort=Sort.LATENCY)) == ["c", "a", "b"]
    with pytest.raises(InvalidProvider) as caught:
        route_names(variant=Variant.FLOOR, preferences=Preferences(sort=Sort.THROUGHPUT))
    assert caught.value.param == "provider.sort"


def test_online_and_thinking_keep_the_providers_that_serve_them() -> None:
    assert route_names(variant=Variant.ONLINE) == ["b"]
    assert route_names(variant=Variant.THINKING) == ["c"]
    with pytest.raises(ModelUnavailable):
        route_names(routed(a={}, b={}), variant=Variant.ONLINE)
    # the suffix first: the request's filters then act on what serves it
    with pytest.raises(NoProviderAvailable) as caught:
        route_names(variant=Variant.ONLINE, preferences=Preferences(ignore=frozenset("b")))
    assert caught.value.filters == ("ignore",)


def test_filters_exclude_and_say_which_excluded_what() -> None:
    assert route_names(preferences=Preferences(only=frozenset("ca"))) == ["a", "c"]  # no reorder
    assert route_names(preferences=Preferences(ignore=frozenset("a"))) == ["b", "c"]
    assert route_names(preferences=Preferences(zdr=True)) == ["b"]
    assert route_names(preferences=Preferences(data_collection=DataCollection.DENY)) == ["c"]
    asks = Preferences(require_parameters=True)
    # a and b leave supported_parameters out: they take every parameter
    assert route_names(preferences=asks, body={"model": "m", "tools": []}) == ["a", "b"]
    assert route_names(preferences=asks, body={"temperature": 1, "messages": []}) == NAMES_L
    with pytest.raises(NoProviderAvailable) as caught:
        route_names(preferences=Preferences(only=frozenset("a"), zdr=True))
    assert caught.value.message == (
        "no provider of 'm' is left for this request: zdr excluded a; only excluded b, c"
    )


NAMES_L = list(NAMES)


def test_providers_unsuited_to_a_request_are_left_out_and_named() -> None:
    board = ProviderBoard()
    route = choose(THREE, prices_of(THREE), most, board, unsuited={"a": "size"})
    assert [c.name for c in route.candidates] == ["b", "c"]
    single = routed(a={"input_sat_per_1m": 1})
    with pytest.raises(NoProviderAvailable) as caught:
        choose(single, prices_of(single), most, board, unsuited={"a": "size"})
    assert caught.value.message == "no provider of 'm' is left for this request: size excluded a"


def test_order_goes_first_and_no_fallbacks_tries_one() -> None:
    assert route_names(preferences=Preferences(order=("c", "b"))) == ["c", "b", "a"]
    assert route_names(preferences=Preferences(order=("c",), sort=Sort.PRICE)) == ["c", "b", "a"]
    route = choose(
        THREE,
        prices_of(THREE),
        most,
        ProviderBoard(),
        preferences=Preferences(order=("b",), allow_fallbacks=False),
    )
    assert [c.name for c in route.candidates] == ["b"]
    assert route.reserve_msat == 2  # only what can be tried is reserved


prices_st = st.lists(st.integers(min_value=0, max_value=10**6), min_size=3, max_size=3)


@given(
    prices_st,
    st.permutations(NAMES).flatmap(lambda p: st.integers(0, 3).map(lambda n: tuple(p[:n]))),
    st.sampled_from([None, Sort.PRICE]),
    st.sets(st.sampled_from(NAMES), max_size=2),
    st.booleans(),
)
def test_any_route_is_the_allowed_providers_in_the_promised_order(
    sat: list[int], order: tuple[str, ...], sort: Sort | None, ignore: set[str], fallbacks: bool
) -> None:
    model = routed(**{n: {"input_sat_per_1m": s} for n, s in zip(NAMES, sat, strict=True)})
    preferences = Preferences(
        order=order, sort=sort, ignore=frozenset(ignore), allow_fallbacks=fallbacks
    )
    route = choose(model, prices_of(model), most, ProviderBoard(), preferences=preferences)
    names = [c.name for c in route.candidates]
    allowed = [n for n in NAMES if n not in ignore]
    expected = [n for n in order if n in allowed] + [n for n in allowed if n not in order]
    if sort is Sort.PRICE:
        head = [n for n in order if n in allowed]
        most_at = {n: most(p) for n, p in zip(NAMES, prices_of(model), strict=True)}
        rest = sorted(expected[len(head) :], key=lambda n: most_at[n])  # ties: node.toml's
        expected = head + rest
    assert names == (expected if fallbacks else expected[:1])
    assert route.reserve_msat == max(c.most_msat for c in route.candidates)
    assert all(c.most_msat == most(c.price) for c in route.candidates)


def test_a_one_provider_model_without_preferences_is_its_provider() -> None:
    single = ModelConfig(id="s", upstream="a", context_length=10, max_output_tokens=5)
    route = choose(single, prices_of(single), most, ProviderBoard())
    assert [c.name for c in route.candidates] == ["a"]
    with pytest.raises(NoProviderAvailable):
        choose(single, prices_of(single), most, ProviderBoard(), running=())


# --- health and measured speed ------------------------------------------------------------------


def test_down_after_failures_in_a_row_up_after_any_answer() -> None:
    board = ProviderBoard()
    for _ in range(DOWN_AFTER_FAILURES - 1):
        board.failed("a")
    board.answered("a", "m", 0.1)  # broken by an answer: still active
    for _ in range(DOWN_AFTER_FAILURES - 1):
        board.failed("a")
    assert board.status("a") is ProviderStatus.ACTIVE
    board.failed("a")
    assert board.status("a") is ProviderStatus.DOWN
    board.up("a")  # a client error is an answer too
    assert board.status("a") is ProviderStatus.ACTIVE
    assert board.status("never-called") is ProviderStatus.ACTIVE


def test_a_down_provider_is_tried_last_then_gets_a_trial_after_a_pause() -> None:
    clock = Clock()
    board = ProviderBoard(clock)
    for _ in range(DOWN_AFTER_FAILURES):
        board.failed("a")
    assert route_names(board=board) == ["b", "c", "a"]
    clock.now += RETRY_DOWN_AFTER_S - 1
    assert route_names(board=board) == ["b", "c", "a"]
    clock.now += 1
    assert route_names(board=board) == ["a", "b", "c"]  # its trial, in its own place
    assert route_names(board=board) == ["b", "c", "a"]  # one trial, not every request's
    board.failed("a")  # the trial failed: another pause
    clock.now += RETRY_DOWN_AFTER_S - 1
    assert route_names(board=board) == ["b", "c", "a"]
    clock.now += 1
    assert route_names(board=board)[0] == "a"
    board.answered("a", "m", 0.2)  # it is back
    assert route_names(board=board) == ["a", "b", "c"]
    assert board.status("a") is ProviderStatus.ACTIVE


def test_measured_speed_is_the_median_of_recent_calls() -> None:
    board = ProviderBoard()
    assert board.latency_s("a") is None and board.throughput("a") is None
    for latency in (0.3, 0.1, 0.2):
        board.answered("a", "m", latency)
    assert board.latency_s("a") == pytest.approx(0.2)
    assert board.latency_s("a", "m") == pytest.approx(0.2)
    board.generated("a", "m", 50, 0.5)
    board.generated("a", "m", 0, 0.5)  # nothing generated: no sample
    assert board.throughput("a") == pytest.approx(100.0)
    assert board.throughput("a", "other") is None
