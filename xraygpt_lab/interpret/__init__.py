"""Interpretability for XrayGPT: what to explain, how, and whether the explanation is right.

* ``targets``        — numbers to explain: answer / phrase log-probability, zero-shot score
* ``attribution``    — Captum methods (IG, SmoothGrad, Occlusion, Saliency, GradientShap,
  Grad-CAM on the last Swin stage, layer IG on the projection) → ``AttributionMap``
* ``attention``      — LLM attention to the image tokens; Swin attention rollout (+ gradients)
* ``faithfulness``   — pointing game, energy in mask, deletion / insertion, random baseline
* ``localization``   — the held-out synthetic benchmark (method × observation tables)
* ``counterfactual`` — the same phantom with and without a finding
* ``geometry``       — maps back through the MedCLIP pad / resize / crop
* ``plots``          — overlays with colour bars and named baselines, tables, counterfactuals
"""
