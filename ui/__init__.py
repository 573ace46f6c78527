"""The Streamlit app: recommendations that react to clicks, the pipeline's runs, the experiments.

``streamlit run ui/app.py -- --service_url http://127.0.0.1:8080 --run_dir runs/local`` runs the
app alone; ``python -m ui.demo`` starts the whole stack. See ``docs/ui.md``.
"""
