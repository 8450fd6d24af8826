"""The viewer: one viser server, a panel to step through a source's objects, and one worker thread that builds them.

Items are built on the worker thread only: it owns the renderer's GL context (a context belongs to one
thread) and serializes model calls; panel callbacks just queue requests, and a request that a newer one
overtook is skipped. The first item is built before the server starts, so a bad input never opens a port.
"""

from __future__ import annotations

import logging
import socket
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import viser

from zv_ray.export.ply import save_ply
from zv_ray.view.items import Item
from zv_ray.view.scene import LAYERS, add_item, initial_view
from zv_ray.view.sources import AUGMENTATIONS, MODE_PROBABILITY, GeneratedObjects, Source

# Recently built items kept for stepping back and forth (a dataset item at 32 x 512 px holds 96 MiB of float views).
CACHE_ITEMS = 4


class PortInUseError(OSError):
    pass


def check_port(host: str, port: int) -> None:
    """Fail before serving if `port` is taken (viser would silently move to the next free one); 0 picks a free port."""
    if port == 0:
        return
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like asyncio's server: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as err:
            raise PortInUseError(f"port {port} on {host} is in use ({err.strerror}): pick another with --port") from None


def ply_bytes(item: Item) -> bytes:
    """The item's Gaussians as the 3DGS .ply `zv-ray reconstruct` writes."""
    with tempfile.TemporaryDirectory() as tmp:
        return save_ply(Path(tmp) / "gaussians.ply", item.gaussians).read_bytes()


class Viewer:
    def __init__(self, source: Source, title: str) -> None:
        self.source, self.title = source, title
        self.server: viser.ViserServer | None = None
        self.item: Item | None = None  # the item on screen
        self.layers: dict[str, list] = {}  # scene nodes on screen, by layer
        self.layer_boxes: dict = {}  # the panel's layer checkboxes, by layer
        self.slider = None  # the panel's object slider (None for a single object)
        self.mode_switches: dict = {}  # the panel's augmentation dropdowns (generated objects), by name
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zv-view")
        self._cache: OrderedDict = OrderedDict()
        self._wanted = 0

    def run(self, fn: Callable, *args: object) -> Future:
        """Run `fn` on the worker thread (where the GL context and the model live)."""
        return self._worker.submit(fn, *args)

    def load(self, index: int) -> Item:
        """Build (or reuse) item `index`; call on the worker thread."""
        key = self.source.key(index)
        if key not in self._cache:
            self._cache[key] = self.source.item(index)
            while len(self._cache) > CACHE_ITEMS:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def serve(self, host: str, port: int) -> viser.ViserServer:
        """Check the port, build the first item, then start the server showing it."""
        check_port(host, port)
        first = self.run(self.load, 0).result()
        # Browsers open speculative connections that close unused; websockets logs each as an error with a traceback.
        logging.getLogger("websockets.server").setLevel(logging.CRITICAL)
        server = viser.ViserServer(host=host, port=port, label=self.title, verbose=False)
        if port and server.get_port() != port:  # lost a race for the port since the check
            server.stop()
            raise PortInUseError(f"port {port} on {host} is in use: pick another with --port")
        self.server = server
        server.scene.set_up_direction("+z")
        server.gui.main_panel.dock_right()  # beside the 3D canvas, not over it
        server.gui.configure_theme(show_share_button=False)  # sharing needs a tunnel service: off on a cluster
        position, look_at = initial_view(first)
        server.initial_camera.position, server.initial_camera.look_at = tuple(position), tuple(look_at)
        self._build_panel()
        self._display(first)
        return server

    def show(self, index: int) -> Future:
        """Queue item `index` for display (the panel's slider, buttons and switches call this)."""
        self._wanted = index
        self._status.content = f"loading {self.source.labels[index]} …"
        return self.run(self._show, index)

    def _show(self, index: int) -> None:
        if index != self._wanted:
            return
        try:
            item = self.load(index)
        except Exception as err:  # noqa: BLE001 - one bad object must not stop the viewer: say so in the panel
            self._status.content = f"**could not show {self.source.labels[index]}**: {err}"
            return
        if index == self._wanted:
            self._display(item)

    def _display(self, item: Item) -> None:
        for nodes in self.layers.values():
            for node in nodes:
                node.remove()
        self.layers = add_item(self.server.scene, item)
        for name, nodes in self.layers.items():
            self.layer_boxes[name].disabled = not nodes  # greyed out where this item has no such layer
            for node in nodes:
                node.visible = self.layer_boxes[name].value
        self.item = item
        self._info.content = f"### {item.title}\n\n{item.info}"
        self._details.content = f"```\n{item.details}\n```"
        self._details_folder.visible = bool(item.details)
        self._download.disabled = item.gaussians is None
        self._status.content = ""

    def _build_panel(self) -> None:
        gui, labels = self.server.gui, self.source.labels
        gui.add_markdown(f"**{self.title}** · {len(labels)} object{'s' * (len(labels) != 1)}")
        if len(labels) > 1:
            self.slider = slider = gui.add_slider("object", min=0, max=len(labels) - 1, step=1, initial_value=0)
            steps = gui.add_button_group("step", ("previous", "next"))
            slider.on_update(lambda _: self.show(int(slider.value)))

            @steps.on_click
            def _(_event) -> None:
                step = 1 if steps.value == "next" else -1
                slider.value = (int(slider.value) + step) % len(labels)  # moves the slider, which shows the item

        if isinstance(self.source, GeneratedObjects):
            with gui.add_folder("augmentations"):
                for name in AUGMENTATIONS:
                    self._add_mode_switch(name)
        with gui.add_folder("layers"):
            self.layer_boxes = {name: gui.add_checkbox(name, initial_value=True) for name in LAYERS}
        for name, box in self.layer_boxes.items():
            box.on_update(lambda _event, name=name: self._set_visible(name))
        self._status = gui.add_markdown("")
        self._info = gui.add_markdown("")
        self._download = gui.add_button("download Gaussians (.ply)", disabled=True)
        self._download.on_click(
            lambda event: event.client.send_file_download(f"{self.item.title}.ply", ply_bytes(self.item))
        )
        with gui.add_folder("all parameters", expand_by_default=False) as self._details_folder:
            self._details = gui.add_markdown("")

    def _add_mode_switch(self, name: str) -> None:
        source = self.source
        prob = getattr(source.cfg, AUGMENTATIONS[name])
        self.mode_switches[name] = switch = self.server.gui.add_dropdown(
            name, tuple(MODE_PROBABILITY), initial_value="sampled", hint=f"sampled: with the config's probability {prob}"
        )

        @switch.on_update
        def _(_event) -> None:
            self.run(source.modes.__setitem__, name, switch.value)  # on the worker: never during a build
            self.show(self._wanted)

    def _set_visible(self, name: str) -> None:
        for node in self.layers.get(name, []):
            node.visible = self.layer_boxes[name].value

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        predictor = getattr(self.source, "predictor", None)
        if predictor is not None:
            self.run(predictor.close).result()  # its renderer is the worker thread's
        self._worker.shutdown()
