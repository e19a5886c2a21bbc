"""PlateauScheduler: the plateau rule as the ReduceLROnPlateau that Lightning and LightningCLI know, with a monitor."""

from __future__ import annotations

from lightning.pytorch.cli import ReduceLROnPlateau as LightningReduceLROnPlateau

from lightning_plateau._rule import PlateauCut, PlateauEvaluation, _PlateauRule

__all__ = ["PlateauCut", "PlateauEvaluation", "PlateauScheduler"]


# Lightning's class stores `monitor` as an attribute; here it is the config's, read-only, so the two never disagree.
class PlateauScheduler(_PlateauRule, LightningReduceLROnPlateau):  # type: ignore[override]
    """torch's ``ReduceLROnPlateau`` configured by a :class:`PlateauConfig`, with two of its bugs fixed.

    For every config :class:`PlateauConfig` accepts and every sequence of values holding no finite negative
    number (zero, ``inf``, ``-inf`` and NaN included), and for any values with ``threshold_mode="abs"``, the
    LRs, ``best``, ``num_bad_epochs`` and ``cooldown_counter`` are torch's, step for step. It departs from torch
    in these places only:

    - a negative best with ``threshold_mode="rel"``: the bar is ``best * (1 + threshold)`` for ``"min"`` and
      ``best * (1 - threshold)`` for ``"max"``, ``threshold * |best|`` beyond ``best`` in the direction of
      improvement. torch's ``best * (1 - threshold)`` and ``best * (1 + threshold)`` put it on the wrong side,
      so a worse value counts as an improvement and a real plateau of a negative metric (a log-likelihood, a
      negative reward) is never cut (pytorch issues 38622, 47513). The trajectory differs from torch's from the
      first value that lies between the two bars. The starting best ``-inf`` of ``"max"`` keeps torch's bar,
      ``-inf``, which any value beats, for every threshold;
    - a param group added after construction (as ``BaseFinetuning`` does) never crashes a later cut: it takes
      the scalar ``min_lr``, or ``0.0`` with one warning when ``min_lr`` was a list (torch raises
      ``RuntimeError`` at the cut);
    - :meth:`load_state_dict` restores the counters, ``best`` and the cuts, but the policy (mode, factor,
      patience, threshold, cooldown, min_lr, eps) stays this scheduler's config, with a warning naming what
      changed; torch's takes the policy from the checkpoint too;
    - while a :class:`~lightning_plateau.PlateauCallback` steps it, ``step()`` without a value does nothing
      and ``step(value)`` raises; outside one, ``step()`` without a value raises ``TypeError`` as torch's does;
    - two settings torch's class lacks, both off by default: ``warmup_steps`` (with ``warmup_start_factor``) ramps
      each group's LR linearly up to its LR at construction, as torch's ``LinearLR`` stepped once per optimizer
      step, through :meth:`apply_warmup` (the constructor sets the first step's LR, as ``LinearLR``'s does); a
      value judged during the warmup is recorded but changes neither ``best`` nor the counters. The drop-in promise
      covers torch's keywords, and warmup is not one of them: stepped by hand, call ``apply_warmup(steps_taken)``
      after each optimizer step, or a second ``step(value)`` with the warmup standing still raises ``RuntimeError``
      (it would never end, and nothing would be judged). ``on_nonfinite``
      ``"skip"`` leaves a NaN or infinite value out of the rule the same way (one warning), ``"raise"`` raises
      ``ValueError`` naming the evaluation and the value;
    - with ``restore_best_on_cut=True`` its PlateauCallback loads the best evaluation's weights and optimizer
      state at each cut (recorded in the cut's ``restored_from``); stepped by hand, it raises, since only the
      callback reaches the module's weights;
    - two more, off by default and not together (``smoothing=0``, ``detector="best"`` keep torch's rule):
      ``smoothing`` judges an exponential moving average of the values in their place; ``detector="slope"``
      replaces the comparison with the best by dlib's count of evaluations over which a least-squares line shows
      no confident decrease (``slope_window``, ``slope_confidence``, ``slope_robust``), reported as
      ``num_bad_epochs``. Its history and the average are in :meth:`state_dict`; a checkpoint of the other
      detector restores all but the count, which starts from 0 (with a warning).

    Kept as torch has them: a NaN value counts as a bad evaluation (with the default ``on_nonfinite="bad"``);
    with ``mode="min"``, ``"rel"`` and ``threshold >= 1`` torch's bar over the starting ``inf`` is NaN or
    ``-inf``, so no value ever improves and the LR is cut every ``patience + 1`` evaluations.

    Every cut is recorded in :attr:`cuts`. A cut called for beyond the limit that
    ``PlateauEarlyStopping(max_reductions=K)`` sets for a fit is not applied: it is recorded in :attr:`withheld`,
    the LR and the counters stay as they were (``num_bad_epochs`` keeps the count that called for it), and the
    run stops there. Inside a Trainer the scheduler is stepped by
    :class:`~lightning_plateau.PlateauCallback`, once per fresh value; outside one, call
    ``step(value)`` as with torch's class.

    Args:
        optimizer: the optimizer whose param groups' LRs are reduced.
        config: the policy, a :class:`PlateauConfig` or a dict of its fields. ``None``: the keyword fields below,
            else the defaults.
        monitor: the metric a Trainer's PlateauCallback judges (what LightningCLI's ``--lr_scheduler.monitor``
            sets); with ``mode``, ``factor``, ``patience``, ``threshold``, ``threshold_mode``, ``cooldown``,
            ``min_lr``, ``eps``, ``strict``, ``warmup_steps``, ``warmup_start_factor``, ``on_nonfinite``,
            ``window_steps``, ``restore_best_on_cut``, ``smoothing``, ``detector``, ``slope_window``,
            ``slope_confidence`` and ``slope_robust`` the fields of :class:`PlateauConfig`, as torch's
            ``ReduceLROnPlateau`` takes them: replacing ``ReduceLROnPlateau(`` by ``PlateauScheduler(`` keeps a line
            working. Fields not given take PlateauConfig's defaults, which are torch's. Give these or ``config``,
            not both.

    Raises:
        ValueError: if a field is outside its allowed range, or ``min_lr`` is a list whose length differs from the
            number of param groups; with ``on_nonfinite="raise"``, from ``step`` for a value that is not finite.
        TypeError: if ``optimizer`` is not a torch optimizer, ``config`` is not a config or dict, or ``config``
            and keyword fields are both given.

    LightningCLI takes it as ``--lr_scheduler lightning_plateau.PlateauScheduler --lr_scheduler.monitor val_loss``:
    it is a ``lightning.pytorch.cli.ReduceLROnPlateau`` (itself torch's class) with a ``monitor``, so LightningCLI
    returns it with its monitor and the Trainer's PlateauCallback drives it.

    Example::

        scheduler = PlateauScheduler(optimizer, mode="min", factor=0.5, patience=3)  # torch's keywords
        scheduler = PlateauScheduler(optimizer, PlateauConfig(patience=3))  # or a config
        for epoch in range(20):
            scheduler.step(validate(model))

        # with a warmup, by hand: the warmup advances with the optimizer steps you report
        scheduler = PlateauScheduler(optimizer, patience=3, warmup_steps=500)
        steps = 0
        for epoch in range(20):
            for batch in loader:
                train_step(batch)  # one optimizer step
                steps += 1
                scheduler.apply_warmup(steps)
            scheduler.step(validate(model))
    """
