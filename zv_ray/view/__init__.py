"""`zv-ray view`: a web viewer (viser) for generated objects, rendered datasets and reconstructions.

    zv-ray view --generate 3                                              # Zeroverse objects, one at a time
    zv-ray view --dataset outputs/dataset                                 # rendered views and camera frusta
    zv-ray view --checkpoint outputs/runs/tiny --objects ../shared/eval/gso   # predicted Gaussians beside the scan
    zv-ray view outputs/demo/gaussians.ply                                # a 3DGS .ply

Layers, bottom up: items.py (what one shown object is), sources.py (objects from the generator, a Parquet
dataset, a mesh folder or a .ply), predictor.py (a checkpoint's Gaussians and held-out scores),
scene.py (viser scene nodes), app.py (server, panel and worker thread), cli.py; browser.py drives
headless Chromium for screenshots and tests.
"""
