"""The Recommend page in ``streamlit.testing.v1.AppTest``, against the real service and model server
on the small pipeline-trained model."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import portpicker
import pytest
import requests
from streamlit.testing.v1 import AppTest

from shoprec import features
from tests.service.conftest import ModelServer, TrainedRun, start_service
from tests.ui.conftest import UiService
from ui import config, recommend_view, shop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")
TIMEOUT_S = 60


def open_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def search(at: AppTest, user_id: str) -> AppTest:
    at.radio(key="user_mode").set_value("Search by id").run()
    at.text_input(key="user_search").set_value(user_id).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame_with(at: AppTest, column: str) -> pd.DataFrame | None:
    """The first table on the page with ``column`` (history: category; live session: request_id)."""
    return next((d.value for d in at.dataframe if column in d.value.columns), None)


def shown(at: AppTest) -> tuple[str, ...]:
    """The item ids of the cards, in order (the Click buttons carry them)."""
    return tuple(b.key.removeprefix("click-") for b in at.button if b.key and b.key.startswith("click-"))


@pytest.fixture(scope="module")
def shop_files(trained_run: TrainedRun) -> shop.Shop:
    loaded = shop.load_shop(str(trained_run.root))
    assert loaded is not None
    return loaded


def test_the_page_shows_the_service_list_as_cards(app_env: dict[str, str], model_server: ModelServer,
                                                  shop_files: shop.Shop) -> None:
    at = open_app()
    assert at.radio(key="user_mode").options == ["Sample user", "Search by id", "New user"]
    samples = shop_files.sample_users()
    assert at.selectbox(key="sample_user").options == samples and at.selectbox(key="sample_user").value == samples[0]
    assert [o.split(":")[0] for o in at.selectbox(key="scene").options] == list(recommend_view.SCENES)
    assert at.slider(key="k").value == 9
    assert at.checkbox(key="scene_lambda").value is True
    low, high = shop_files.price_range()
    assert at.slider(key="price_range").value[0] <= low and at.slider(key="price_range").value[1] >= high
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Model version"] == str(model_server.version)
    assert metrics["User"] == "known" and metrics["Items"] == "9"

    # The same query straight to the service gives the same items (nothing was posted in between).
    expected = requests.post(app_env[config.SERVICE_URL_ENV] + "/recommend",
                             json={"user_id": samples[0], "scene": "home", "k": 9}, timeout=10).json()
    assert shown(at) == tuple(item["item_id"] for item in expected["items"])
    texts = [m.value for m in at.markdown]
    captions = [c.value for c in at.caption]
    for rank, item in enumerate(expected["items"], start=1):
        row = shop_files.items.loc[item["item_id"]]
        assert f"**{rank}. {item['item_id']}**" in texts
        assert f"{row[features.CATEGORY]} · {row[features.BRAND]} · {row[features.PRICE]:.2f}" in texts
        assert f"score {item['score']:.4f} · {item['route']} · model v{model_server.version}" in captions
        assert item["reason"] in captions
    history = frame_with(at, features.CATEGORY)
    assert history is not None
    assert not history.empty and set(history[features.ITEM_ID]) <= set(shop_files.items.index)
    assert history[features.ITEM_ID].iloc[0] == shop_files.history(samples[0])[features.ITEM_ID].iloc[0]


def test_a_click_posted_from_the_page_changes_the_next_list(app_env: dict[str, str], ui_service: UiService,
                                                            shop_files: shop.Shop) -> None:
    user = shop_files.sample_users(12)[8]
    at = search(open_app(), user)
    before = shown(at)
    request_id = at.session_state["last_list"]["request_id"]
    clicked = before[-1]
    at.button(key=f"click-{clicked}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    after = shown(at)
    assert after != before, "a click must change the next list"
    change = recommend_view.diff_lists(before, after)
    assert [s.value for s in at.success] == [recommend_view.describe_change(change, f"click on {clicked}")]
    new_cards = [m.value for m in at.markdown if "NEW" in m.value]
    assert len(new_cards) == len(change.added)
    session = frame_with(at, "request_id")
    assert session is not None
    assert session[[features.ITEM_ID, features.EVENT_TYPE, "request_id"]].values.tolist() == [
        [clicked, features.CLICK, request_id]]
    with sqlite3.connect(ui_service.event_log) as db:
        logged = db.execute("SELECT item_id, event_type, request_id FROM events WHERE user_id = ?",
                            (user,)).fetchall()
    assert logged == [(clicked, features.CLICK, request_id)]


def test_a_purchase_removes_the_item_from_the_next_list(app_env: dict[str, str], shop_files: shop.Shop) -> None:
    at = search(open_app(), shop_files.sample_users(12)[9])
    before = shown(at)
    at.button(key=f"purchase-{before[0]}").click().run()
    after = shown(at)
    assert before[0] not in after
    assert any(f"~~{before[0]}~~" in c.value for c in at.caption)  # listed as dropped


def test_detail_and_cart_scenes_ask_for_their_context(app_env: dict[str, str], shop_files: shop.Shop) -> None:
    at = search(open_app(), shop_files.sample_users(12)[10])
    at.selectbox(key="scene").set_value("detail").run()
    assert any("needs the item being viewed" in i.value for i in at.info) and not shown(at)
    item = shop_files.items.index[3]
    at.selectbox(key="current_item").set_value(item).run()
    assert shown(at) and item not in shown(at)
    at.selectbox(key="scene").set_value("cart").run()
    assert any("needs the cart" in i.value for i in at.info) and not shown(at)
    cart = list(shop_files.items.index[5:7])
    at.multiselect(key="cart_items").set_value(cart).run()
    assert shown(at) and not set(cart) & set(shown(at))
    assert {m.label: m.value for m in at.metric}["Items"] == "9"


def test_k_diversity_and_the_price_filter_reach_the_service(app_env: dict[str, str],
                                                            shop_files: shop.Shop) -> None:
    at = search(open_app(), shop_files.sample_users(12)[11])
    at.slider(key="k").set_value(5).run()
    assert len(shown(at)) == 5
    at.checkbox(key="scene_lambda").uncheck().run()
    at.slider(key="diversity").set_value(1.0).run()
    assert {m.label: m.value for m in at.metric}["Diversity λ"] == "1.00"
    categories = {shop_files.items.loc[i, features.CATEGORY] for i in shown(at)}
    assert len(categories) == 5  # λ = 1: a new category at every pick
    low, high = at.slider(key="price_range").value
    at.slider(key="price_range").set_value((low, 30.0)).run()
    assert shown(at) and all(shop_files.items.loc[i, features.PRICE] <= 30.0 for i in shown(at))


def test_an_unknown_user_gets_a_clear_message_and_a_cold_start_list(app_env: dict[str, str]) -> None:
    at = search(open_app(), "nobody-at-all")
    assert [w.value for w in at.warning] == [
        "**Unknown user `nobody-at-all`**: the model has no profile for this user (not in the shop's users.csv). "
        "This is a cold-start list: popularity, then the live session once events arrive."]
    assert {m.label: m.value for m in at.metric}["User"] == "cold start"
    assert len(shown(at)) == 9


def test_a_new_user_gets_a_fresh_id_and_no_warning(app_env: dict[str, str]) -> None:
    at = open_app()
    at.radio(key="user_mode").set_value("New user").run()
    user = at.session_state["new_user_id"]
    assert user.startswith("new-") and not at.warning
    assert any(f"New user `{user}`" in c.value for c in at.caption)
    assert frame_with(at, features.CATEGORY) is None  # no history in the files
    assert {m.label: m.value for m in at.metric}["User"] == "cold start" and len(shown(at)) == 9
    at.button(key="another_new_user").click().run()
    assert at.session_state["new_user_id"] != user


def test_a_service_that_is_down_gives_a_message_not_a_traceback(monkeypatch: pytest.MonkeyPatch,
                                                                app_env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{portpicker.pick_unused_port()}"
    monkeypatch.setenv(config.SERVICE_URL_ENV, url)
    at = open_app()
    assert len(at.error) == 1
    assert at.error[0].value.startswith(f"**The recommendation service is not reachable** at `{url}`")
    assert "python -m ui.demo" in at.error[0].value and not shown(at)


def test_a_service_without_a_model_says_the_model_is_not_loaded(
        monkeypatch: pytest.MonkeyPatch, app_env: dict[str, str], trained_run: TrainedRun,
        tmp_path: Path) -> None:
    dead_model = f"grpc://127.0.0.1:{portpicker.pick_unused_port()}"
    process = start_service(trained_run, dead_model, tmp_path, "--event_log", str(tmp_path / "events.sqlite"))
    try:
        monkeypatch.setenv(config.SERVICE_URL_ENV, process.url)
        at = open_app()
        assert len(at.warning) == 1 and at.warning[0].value.startswith("**The model is not loaded**")
        assert {m.label: m.value for m in at.metric}["Model version"] == "none"
        assert len(shown(at)) == 9  # served from the non-model routes
        assert all("model unavailable" in c.value for c in at.caption if c.value.startswith("score "))
    finally:
        process.stop()
