"""MMICT Studio — the Gradio app (layout only; the handlers are in :mod:`app.handlers`).

Run it with ``mmict app`` (what ``make demo`` runs).  Binds 127.0.0.1 unless told otherwise;
every model job (compare, train, attention, backbone loads) goes through one queue slot, so two
users never drive the model at once; each browser tab has its own session.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reports to Gradio's servers

import gradio as gr  # noqa: E402

from mmict_core.backbones import QUANT_MODES
from mmict_core.workbench import AUTO_STRATEGIES, GALLERY_TASKS, trainable_methods

from .case_study import build_tab
from .handlers import Studio

MODEL = dict(concurrency_id="model", concurrency_limit=1)  # one queue slot for all model work
MAX_UPLOAD = "5mb"
INTRO = """# MMICT Studio
Multimodal in-context learning and in-context tuning on a small **teaching VLM** (or your own
checkpoint).  Pick demonstrations, train an adapter, compare methods on the same query, and look
at the attention HiFICL's virtual key/value pairs receive.  Everything is computed live."""


def while_running(button: gr.Button, fn, inputs, outputs):
    """``button`` runs ``fn`` in the model queue and stays disabled until it has finished (or failed)."""
    return button.click(lambda: gr.Button(interactive=False), None, button, queue=False).then(
        fn, inputs, outputs, **MODEL).then(lambda: gr.Button(interactive=True), None, button, queue=False)


def build_app(studio: Studio) -> gr.Blocks:
    with gr.Blocks(title="MMICT Studio", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        case_tab, (c_kind, c_shots, c_index, c_img, c_text) = build_tab(studio, MODEL)
        with gr.Tab("Backbone", id="backbone"):
            with gr.Row():
                spec = gr.Textbox(value=studio.spec, scale=3, label="Backbone (teaching, a teaching-VLM folder, "
                                  "a checkpoint folder or a cached hub id)")
                quant = gr.Radio(list(QUANT_MODES), value=studio.quant, label="Quantisation", scale=2)
                load = gr.Button("Load backbone", scale=1)
            info = gr.Markdown()

        with gr.Tab("Demonstrations", id="demos"):
            with gr.Row():
                task = gr.Dropdown(list(GALLERY_TASKS), value="binding", label="Task pool")
                task_md = gr.Markdown(studio.task_info("binding"))
                pool_size = gr.Slider(4, 64, value=studio.pool_size, step=1, label="Pool size")
                pool_seed = gr.Number(value=0, precision=0, label="Pool seed")
                new_pool = gr.Button("New pool")
            gallery = gr.Gallery(label="Pool (click to add / remove a demonstration)", columns=8, height=330,
                                 allow_preview=False, object_fit="contain")
            with gr.Row():
                with gr.Column(scale=2):
                    demo_md = gr.Markdown()
                    with gr.Row():
                        pos = gr.Number(value=1, precision=0, label="Demo position")
                        up = gr.Button("Move up")
                        down = gr.Button("Move down")
                        clear = gr.Button("Clear")
                    with gr.Row():
                        strategy = gr.Dropdown(list(AUTO_STRATEGIES), value="random", label="Selection strategy")
                        k = gr.Slider(0, 16, value=4, step=1, label="k")
                        sel_seed = gr.Number(value=0, precision=0, label="Seed")
                        fill = gr.Button("Fill k automatically")
                    with gr.Accordion("Upload a demonstration", open=False):
                        up_file = gr.File(label="Image file (PNG/JPEG, 5 MB max)", file_types=["image"])
                        up_prompt = gr.Textbox(label="Prompt", value="what is this ?")
                        up_answer = gr.Textbox(label="Answer")
                        up_btn = gr.Button("Add to the pool")
                with gr.Column(scale=1):
                    q_img = gr.Image(label="Query image", interactive=False, height=160)
                    q_prompt = gr.Textbox(label="Question")
                    q_answer = gr.Textbox(label="Reference answer (optional: marks outputs correct/incorrect)")
                    q_file = gr.File(label="Replace the query image (optional)", file_types=["image"])
                    with gr.Row():
                        q_set = gr.Button("Set query")
                        q_idx = gr.Number(value=1, precision=0, label="Pool # (from 1, as in the gallery)")
                        q_from = gr.Button("Use pool # as query")

        with gr.Tab("Compare", id="compare"):
            methods = gr.Dropdown(["ICL"], value=["ICL"], multiselect=True, allow_custom_value=True,
                              label="Methods (ICL uses the demonstrations; adapters appear here once trained or loaded)")
            with gr.Row():
                run = gr.Button("Run compare", variant="primary")
                export = gr.Button("Export case study (PNG + HTML)")
            table = gr.Dataframe(headers=["method", "demos", "output", "correct", "latency ms", "LM tokens"],
                                 label="Outputs on the same query", interactive=False)
            case = gr.HTML()
            files = gr.File(label="Case study files", file_count="multiple")

        with gr.Tab("Train", id="train"):
            with gr.Row():
                t_method = gr.Dropdown(trainable_methods(), value="hificl", label="Method")
                t_task = gr.Dropdown(list(GALLERY_TASKS), value="binding", label="Task")
                t_samples = gr.Number(value=200, precision=0, label="Samples")
                t_steps = gr.Number(value=300, precision=0, label="Steps")  # with fixed binding: learns (0.9+)
            with gr.Row():
                t_method_md = gr.Markdown(studio.method_info("hificl")[0])
                t_task_md = gr.Markdown(studio.task_info("binding"))
            with gr.Row():
                t_lr = gr.Number(value=5e-3, label="Learning rate")
                t_rank = gr.Number(value=8, precision=0, label="Rank")
                t_seed = gr.Number(value=0, precision=0, label="Seed")
                t_fixed = gr.Checkbox(value=True, label="Fixed binding (binding task: one word per colour for "
                                                         "every episode, as `--fixed-binding`)")
                t_heldout = gr.Number(value=50, precision=0, label="Held-out episodes scored when training ends")
            with gr.Row():
                t_go = gr.Button("Train", variant="primary")
                t_cancel = gr.Button("Cancel")
            t_status = gr.Markdown()
            t_plot = gr.Plot(label="Loss")

        with gr.Tab("Attention", id="attention"):
            with gr.Row():
                a_adapter = gr.Dropdown(label="HiFICL adapter", choices=[], allow_custom_value=True)
                a_layer = gr.Slider(-1, studio.num_layers - 1, value=-1, step=1, label="Layer for the per-token view (-1: every layer)")
                a_go = gr.Button("Show attention", variant="primary")
            a_grid = gr.Plot(label="Virtual-KV mass, layer x head (query tokens)")
            a_tok = gr.Plot(label="Virtual-KV mass per token")
            a_slots = gr.Plot(label="Weight of each virtual slot")

        with gr.Tab("VLibrary", id="vlibrary"):
            with gr.Row():
                l_query = gr.Textbox(label="Search")
                l_search = gr.Button("Search / refresh")
            l_table = gr.Dataframe(headers=["name", "source", "method", "task", "parameters", "final loss", "held-out accuracy", "in session"],
                                   interactive=False)
            with gr.Row():
                l_name = gr.Dropdown(label="Entry", choices=[], allow_custom_value=True)
                l_show = gr.Button("Inspect")
                l_load = gr.Button("Load into Compare")
                l_delete = gr.Button("Delete", variant="stop")
            with gr.Row():
                l_many = gr.Dropdown(label="Compose these entries", choices=[], multiselect=True, allow_custom_value=True)
                l_weights = gr.Textbox(label="Weights (comma separated; empty = equal)")
                l_compose = gr.Button("Compose")
            with gr.Row():
                l_clear = gr.Button("Clear my session", variant="stop")
                gr.Markdown("Your adapters are kept on this server for your next visit from this browser "
                            "(a week after last use); *Clear my session* deletes them now.")
            l_msg = gr.Markdown()
            l_json = gr.JSON()

        demo_out = [gallery, demo_md, q_img, q_prompt, q_answer]
        lib_out = [l_table, l_name, l_many]
        sid = gr.BrowserState(None, storage_key="mmict-studio-session")
        demo.load(studio.attach, sid, sid, **MODEL).then(studio.refresh, None, demo_out, **MODEL).then(studio.backbone_text, None, info).then(
            studio.method_choices, None, methods).then(studio.library_list, l_query, lib_out).then(
            studio.attention_choices, None, a_adapter).then(studio.last_results, None, table)
        demo.load(case_tab.preview, [c_kind, c_shots, c_index], [c_img, c_text])
        demo.unload(studio.drop_session)
        l_clear.click(studio.clear_session, sid, [sid, l_msg], **MODEL).then(studio.last_results, None, table).then(
            studio.library_list, l_query, lib_out).then(
            studio.method_choices, None, methods).then(studio.attention_choices, None, a_adapter)
        while_running(load, studio.load_backbone, [spec, quant], info).then(studio.method_choices, None, methods)
        new_pool.click(studio.new_pool, [task, pool_size, pool_seed], demo_out, **MODEL)
        gallery.select(studio.pick, None, demo_out, **MODEL)
        up.click(studio.move_up, pos, demo_out, **MODEL)
        down.click(studio.move_down, pos, demo_out, **MODEL)
        clear.click(studio.clear, None, demo_out, **MODEL)
        fill.click(studio.auto_fill, [strategy, k, sel_seed], demo_out, **MODEL)
        up_btn.click(studio.upload_demo, [up_file, up_prompt, up_answer], demo_out, **MODEL)
        q_set.click(studio.set_query, [q_file, q_prompt, q_answer], demo_out, **MODEL)
        q_from.click(studio.query_from_gallery, q_idx, demo_out, **MODEL)
        while_running(run, studio.compare, methods, [table, case])
        while_running(export, studio.export_case, None, files)
        t_method.change(studio.method_info, t_method, [t_method_md, t_rank])
        t_task.change(studio.task_info, t_task, t_task_md)
        task.change(studio.task_info, task, task_md)
        # the progress shows on the status line only, so the loss curve stays visible
        t_go.click(studio.request_training, None, [t_status, t_go], queue=False).then(
            studio.train, [t_method, t_task, t_samples, t_steps, t_lr, t_rank, t_seed, t_fixed, t_heldout], [t_status, t_plot],
            show_progress_on=[t_status], **MODEL).then(studio.training_done, None, t_go).then(
            studio.method_choices, None, methods).then(
            studio.attention_choices, None, a_adapter).then(studio.library_list, l_query, lib_out)
        t_cancel.click(studio.cancel, None, t_status, queue=False)
        while_running(a_go, studio.attention, [a_adapter, a_layer], [a_grid, a_tok, a_slots])
        l_search.click(studio.library_list, l_query, lib_out)
        l_show.click(studio.library_show, l_name, l_json)
        l_load.click(studio.library_load, l_name, [l_msg, *lib_out], **MODEL).then(
            studio.method_choices, None, methods).then(studio.attention_choices, None, a_adapter)
        l_compose.click(studio.library_compose, [l_many, l_weights], [l_msg, *lib_out], **MODEL).then(
            studio.method_choices, None, methods).then(studio.attention_choices, None, a_adapter)
        l_delete.click(studio.library_delete, l_name, [l_msg, *lib_out], **MODEL).then(
            studio.method_choices, None, methods).then(studio.attention_choices, None, a_adapter)
    demo.queue(default_concurrency_limit=4, max_size=64)
    return demo


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def launch(spec: str | None = None, quant: str = "none", host: str = "127.0.0.1", port: int = 7860,
           share: bool = False, workdir: str | None = None, block: bool = True, allowed_roots=()):
    """Build the app on ``spec`` and serve it; returns (demo, url, studio) (at once when ``block`` is False).
    Served beyond localhost (another ``host`` or ``share``), backbones load only from ``allowed_roots``."""
    studio = Studio(spec, quant, workdir=workdir, public=share or host not in LOCAL_HOSTS, allowed_roots=allowed_roots)
    demo = build_app(studio)
    _, url, _ = demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD,
                            prevent_thread_lock=not block, show_error=True)
    return demo, url, studio
