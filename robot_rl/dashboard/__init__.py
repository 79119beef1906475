"""The operator's live web page of a training run: fleet, cameras, learning, controls (``robot-rl dashboard``).

``protocol`` defines the learner <-> dashboard messages, ``feed`` is the learner's side (never blocks the update
loop), ``server`` follows the feed and validates commands, ``app`` is the Starlette app and the command, and
``static/index.html`` the one page (no build step, no CDN).
"""
