"""How one model input is fed: the host-side name for the agent protocol's input description.

The agent's messages (``edgecal_agent.messages``) are the single source of truth for message
shapes, so the host uses its ``InputDesc`` directly:

``kind="image"``: samples are uint8 ``(rows, cols, 3)`` BGR arrays (what ``cv::imread`` gives);
the agent applies ``Mat.from_pixels_resize(bgr, PIXEL_BGR[2X], cols, rows, w, h)`` with
``(w, h) = target_size(cols, rows)`` and then ``substract_mean_normalize(mean, norm)``.

``kind="npy"``: samples are float32 C-order arrays whose numpy shape is ``shape`` reversed
(``shape`` is given in ncnn's ``w,h,(d),c`` order as on ncnn2table's command line).
"""

from __future__ import annotations

from edgecal_agent.messages import PIXEL_TYPES
from edgecal_agent.messages import InputDesc as InputSpec

__all__ = ["PIXEL_TYPES", "InputSpec"]
