"""Attribution methods, one module per family, and the registry :data:`METHODS`."""
from .backprop import deconvnet, guided_backprop
from .gradients import gradient, gradient_x_input

METHODS = {}
