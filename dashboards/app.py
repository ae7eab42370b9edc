"""exdd operator review dashboard: what the model flags, the operators' verdicts, the model
in service. Start it with ``make dashboard`` (scripts/dashboard.sh: 127.0.0.1 only).

A thin Streamlit layer over ``exdd.line.review`` and ``exdd.line.registry``; the sidebar (line,
operator identity) is shared by every page.
"""

import streamlit as st

import ui

st.set_page_config(page_title="exdd review", page_icon=":material/search:", layout="wide")
ui.sidebar()
st.navigation([
    st.Page("views/queue.py", title="Review queue", icon=":material/search:", default=True),
    st.Page("views/model.py", title="Model", icon=":material/model_training:"),
]).run()
