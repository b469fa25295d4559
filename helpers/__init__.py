"""fakeface-lab helpers: one module per stage of the real-vs-AI-generated face pipeline.

Modules: ``config`` (run settings, finding data and weights), ``data`` (validated loader,
manifest scan), ``splits`` (leakage-free splits), ``pipeline`` (tf.data), ``sources`` and
``download`` (public face sets), ``generate`` (paired fakes), ``storage`` (S3), ``models``,
``train``, ``evaluate``, ``plots``, ``explain``, ``embed``, ``reproduce``.
"""

__version__ = "0.2.0"
