"""Interpretability for XrayGPT: what to explain, how, and whether the explanation is right.

One code path for the tiny model (Swin encoder) and the released XrayGPT (EVA ViT + Q-Former):

* ``targets``           — numbers to explain: answer / phrase log-probability, zero-shot score
* ``maps``              — ``AttributionMap``; baselines in the model's pixel space
* ``attribution``       — Captum methods (IG, SmoothGrad, Occlusion, Saliency, GradientShap,
  Grad-CAM on the encoder's token grid, layer IG on the projection, feature IG) → ``AttributionMap``;
  ``explain`` draws every map kind
* ``attention``         — LLM attention to the image tokens; encoder rollouts; Q-Former cross-attention
* ``stacks``            — what each encoder offers the attention maps (Swin grid or Q-Former queries)
* ``swin_attention``    — Swin window attention rollout (+ gradients)
* ``qformer_attention`` — ViT + Q-Former attention, relevance rules, each query's place on the image
* ``hooks``             — eager attention; the token grid Grad-CAM reads
* ``faithfulness``      — pointing game, energy in mask, deletion / insertion, random baseline
* ``localization``      — the held-out synthetic benchmark (method × observation tables)
* ``counterfactual``    — the same phantom with and without a finding
* ``geometry``          — maps back through the MedCLIP pad / resize / crop (or BLIP-2's stretch)
* ``plots``             — overlays with colour bars and named baselines, tables, counterfactuals,
  query-token attention and per-query maps
"""
