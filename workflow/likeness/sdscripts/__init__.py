"""Everything about kohya sd-scripts v0.10.1's formats, in one package (it imports nothing of the stages).

- ``options``: the option tables of ``sdxl_train_network.py`` and ``sdxl_gen_img.py`` (resources/kohya/),
  the checks of train.toml, dataset.toml and ``train.extra`` against them;
- ``tomlfile``: TOML writing (through tomli-w) in the layout sd-scripts documents;
- ``configs``: dataset.toml and train.toml built from the ``train`` settings;
- ``prompts``: the sample-prompt file format and its per-line options;
- ``images``: which files sd-scripts loads from an image folder (its case-sensitive suffix list);
- ``buckets``: aspect-ratio buckets, regularisation balancing and the exact step count;
- ``names``: file and folder names sd-scripts writes (checkpoints, states, samples, latent caches);
- ``states``: reading saved states and checkpoints (complete or cut short, the resume point);
- ``progress``: reading its console output (tqdm bar: live progress and measured speed);
- ``tensorboard``: reading the TensorBoard event files it logs to (loss and learning rate by step).
"""

RELEASE = "v0.10.1"
