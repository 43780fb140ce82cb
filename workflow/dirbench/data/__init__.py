"""Dataset acquisition and preparation: the offline demo dataset, OASIS (neurite) and LUMIR-2024.

Every preparer writes a folder with a ``dataset.json`` in the schema of :mod:`dirbench.dataset`.
"""
