"""Recommend page: a user's list for a scene, as item cards; a click or a purchase posts the event
and the next list shows what changed."""

from __future__ import annotations

import math

import streamlit as st

from shoprec import features
from ui import recommend_view as view
from ui import shop as shop_lib
from ui.client import RecommendQuery, ServiceError, ServiceUnavailable
from ui.page_support import client, load_shop, service_down, settings

CARDS_PER_ROW = 3
MODES = ("Sample user", "Search by id", "New user")
state = st.session_state
state.setdefault("posted_events", [])


def post_event(user_id: str, item_id: str, event_type: str, request_id: str, key: str,
               shown: tuple[str, ...]) -> None:
    """Button callback: posts the event, remembers the list it was posted from."""
    label = f"{view.EVENT_LABELS[event_type].lower()} on {item_id}"
    try:
        client(settings().service_url).post_event(user_id, item_id, event_type, request_id)
    except ServiceUnavailable as err:
        state["event_error"] = f"The {label} was not recorded: the service stopped answering ({err})."
        return
    except ServiceError as err:
        state["event_error"] = f"The service refused the {label}: {err.message}"
        return
    state["posted_events"].append(view.PostedEvent(user_id, item_id, event_type, request_id))
    state["baseline"] = {"key": key, "items": shown, "event": label}


def new_user() -> None:
    """Button callback: a fresh new-user id."""
    state["new_user_id"] = shop_lib.new_user_id()


current = settings()
service = client(current.service_url)
st.title("Recommend")
try:
    health = service.health()
except ServiceUnavailable as err:
    service_down(current.service_url, str(err))
    st.stop()
except ServiceError as err:
    st.error(f"The service's health check failed: {err.message}")
    st.stop()
if health.model_version is None:
    st.warning("**The model is not loaded**: the service has no model version, so lists come from "
               "popularity and co-occurrence only. Is the model server running and has a model been "
               f"pushed? Problems: {'; '.join(health.problems)}")
elif health.status != "ok":
    st.warning(f"The service is degraded: {'; '.join(health.problems)}")

shop = load_shop(current.run_dir)
with st.sidebar:
    st.header("Query")
    mode = st.radio("User", MODES, key="user_mode", horizontal=True)
    user_id: str | None = None
    if mode == "Sample user":
        if shop is not None:
            user_id = st.selectbox("Sample user (most active)", shop.sample_users(), key="sample_user")
        else:
            st.info(f"No shop files in `{shop_lib.data_dir(current.run_dir)}`: search a user by id.")
    elif mode == "Search by id":
        user_id = st.text_input("User id", key="user_search", placeholder="e.g. u42").strip() or None
    else:
        state.setdefault("new_user_id", shop_lib.new_user_id())
        user_id = state["new_user_id"]
        st.caption(f"New user `{user_id}`: no profile and no history.")
        st.button("Another new user", on_click=new_user, key="another_new_user")
    scene = st.selectbox("Scene", view.SCENES, key="scene", format_func=lambda s: f"{s}: {view.SCENE_HELP[s]}")
    current_item: str | None = None
    cart: tuple[str, ...] = ()
    if scene == "detail":
        if shop is not None:
            current_item = st.selectbox("Current item", list(shop.items.index), index=None, key="current_item",
                                        format_func=shop.item_label, placeholder="the item being viewed")
        else:
            current_item = st.text_input("Current item id", key="current_item_id").strip() or None
    elif scene == "cart":
        if shop is not None:
            cart = tuple(st.multiselect("Cart items", list(shop.items.index), key="cart_items",
                                        format_func=shop.item_label))
        else:
            cart = tuple(i.strip() for i in st.text_input("Cart item ids (comma-separated)",
                                                          key="cart_item_ids").split(",") if i.strip())
    k = st.slider("k (list length)", 1, 30, 9, key="k")
    scene_lambda = st.checkbox("The scene's default diversity", value=True, key="scene_lambda")
    diversity = None if scene_lambda else st.slider("Diversity λ", 0.0, 1.0, 0.2, 0.05, key="diversity")
    min_price: float | None = None
    max_price: float | None = None
    if shop is not None:
        low, high = shop.price_range()
        low, high = float(math.floor(low)), float(math.ceil(high))
        chosen = st.slider("Price range", low, high, (low, high), key="price_range")
        min_price = chosen[0] if chosen[0] > low else None
        max_price = chosen[1] if chosen[1] < high else None

if user_id is None:
    st.info("Choose a sample user, type a user id, or pick **New user** in the sidebar.")
    st.stop()
if scene == "detail" and current_item is None:
    st.info("The **detail** scene needs the item being viewed: choose one in *Current item*.")
    st.stop()
if scene == "cart" and not cart:
    st.info("The **cart** scene needs the cart: add items in *Cart items*.")
    st.stop()

query = RecommendQuery(user_id=user_id, scene=scene, k=k, diversity=diversity, current_item=current_item,
                       cart_items=cart, min_price=min_price, max_price=max_price)
try:
    response = service.recommend(query)
except ServiceUnavailable as err:
    service_down(current.service_url, str(err))
    st.stop()
except ServiceError as err:
    st.error(f"The service refused the request (HTTP {err.status_code}): {err.message}")
    st.stop()

if not response.known_user and mode != "New user":
    in_files = shop is not None and shop.knows_user(user_id)
    st.warning(f"**Unknown user `{user_id}`**: the model has no profile for this user"
               + (" (in users.csv, but without training events)" if in_files else
                  (" (not in the shop's users.csv)" if shop is not None else ""))
               + ". This is a cold-start list: popularity, then the live session once events arrive.")
for warning in response.warnings:
    st.caption(f"⚠️ {warning}")
if response.ignored_context_items:
    st.caption(f"Ignored context items (not in the catalogue): {', '.join(response.ignored_context_items)}")

for column, (label, value) in zip(st.columns(4), view.response_summary(response).items()):
    column.metric(label, value)
st.caption(f"request id `{response.request_id}` · user `{response.user_id}` · scene `{response.scene}`")

key = view.query_key(query)
shown = tuple(item.item_id for item in response.items)
added: set[str] = set()
baseline = state.get("baseline")
if baseline is not None and baseline["key"] == key:
    change = view.diff_lists(baseline["items"], shown)
    added = set(change.added)
    (st.success if change.changed else st.info)(view.describe_change(change, baseline["event"]))
    if change.removed:
        st.caption("Dropped: " + ", ".join(f"~~{item}~~" for item in change.removed))
if "event_error" in state:
    st.error(state.pop("event_error"))
state["last_list"] = {"key": key, "items": shown, "request_id": response.request_id}

if not response.items:
    st.info("No items match: widen the price range or change the scene.")
for start in range(0, len(response.items), CARDS_PER_ROW):
    row = response.items[start:start + CARDS_PER_ROW]
    for rank, column, item in zip(range(start + 1, start + 1 + len(row)), st.columns(CARDS_PER_ROW), row):
        with column, st.container(border=True, key=f"card-{item.item_id}"):
            st.markdown(view.card_title(item, rank, item.item_id in added))
            st.markdown(view.card_facts(item))
            st.caption(view.card_score(item, response.model_version))
            st.caption(item.reason)
            left, right = st.columns(2)
            for box, event_type in ((left, features.CLICK), (right, features.PURCHASE)):
                box.button(view.EVENT_LABELS[event_type], key=f"{event_type}-{item.item_id}",
                           on_click=post_event,
                           args=(user_id, item.item_id, event_type, response.request_id, key, shown))

history_column, session_column = st.columns(2)
with history_column:
    st.subheader("Recent history")
    if shop is None:
        st.caption("No shop files to read the history from.")
    else:
        history = shop.history(user_id)
        st.caption(f"The user's latest events in `{shop_lib.data_dir(current.run_dir)}/events.csv`.")
        if history.empty:
            st.caption("No events in the shop's files.")
        else:
            st.dataframe(history, hide_index=True, key="history")
with session_column:
    st.subheader("Live session")
    session = view.session_table(state["posted_events"], user_id)
    st.caption("Events posted from this page; the service's feature store holds them for the session.")
    if session.empty:
        st.caption("None yet: click or buy an item.")
    else:
        st.dataframe(session, hide_index=True, key="session")
