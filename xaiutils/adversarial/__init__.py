"""Adversarial examples, robust training and attacks on explanations (chapters 12, 13 and 18).

* :mod:`.attacks` -- :func:`fgsm`, :func:`pgd` and :func:`robust_accuracy`;
* :mod:`.training` -- losses for :func:`xaiutils.models.train`: :func:`adversarial_loss`,
  :func:`gradient_regularised_loss`, :func:`noise_augmented_loss`;
* :mod:`.explanations` -- :func:`top_k_attack`, :func:`centre_of_mass_attack`,
  :func:`manipulate_explanation` and the :func:`beta_smoothed` network;
* :mod:`.manipulation` -- :func:`manipulate_model` (Grad-CAM fooled by fine-tuning).
"""
from .attacks import fgsm, pgd, robust_accuracy
from .explanations import beta_smoothed, centre_of_mass_attack, manipulate_explanation, saliency_map, top_k_attack
from .manipulation import manipulate_model
from .training import adversarial_loss, gradient_regularised_loss, noise_augmented_loss

__all__ = ["fgsm", "pgd", "robust_accuracy", "adversarial_loss", "gradient_regularised_loss", "noise_augmented_loss",
           "beta_smoothed", "saliency_map", "top_k_attack", "centre_of_mass_attack", "manipulate_explanation",
           "manipulate_model"]
