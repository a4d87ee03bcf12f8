"""MMICT Studio's Gradio app: layout (:mod:`app.main`) and event handlers (:mod:`app.handlers`)."""
