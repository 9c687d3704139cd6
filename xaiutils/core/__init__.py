"""The shared foundation of ``xaiutils``: what every attribution method, metric and attack uses.

* :mod:`.model_state`: :func:`explaining`, the one place that touches a user's model and restores it;
* :mod:`.targets`: what to explain (:data:`Target`), and one way to take the rows of a per-example argument;
* :mod:`.batching`: one way to map a function over blocks of rows, one meaning of ``batch_size``;
* :mod:`.layers`: a layer by module or dotted name;
* :mod:`.baselines`: one vocabulary of baselines and removals (``"zeros"``, ``"mean"``, ``"blur"``, ...);
* :mod:`.checks`: argument checks whose messages name the argument, what was given and what is expected.

Nothing here imports the rest of the package.
"""
from .baselines import BASELINES, gaussian_blur, resolve_baseline
from .batching import chunks, map_batched
from .checks import check_input, check_model_input
from .layers import last_conv_layer, resolve_layer
from .model_state import explaining
from .targets import Target, as_index, check_target, repeat, rows_of, select

__all__ = ["BASELINES", "gaussian_blur", "resolve_baseline", "chunks", "map_batched", "check_input",
           "check_model_input", "last_conv_layer", "resolve_layer", "explaining", "Target", "as_index",
           "check_target", "repeat", "rows_of", "select"]
