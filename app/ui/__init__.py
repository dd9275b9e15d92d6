"""The lab dashboard at /ui: pages rendered by the service from Jinja2 templates, a small
hand-written stylesheet and script (``static/``), updated live from the event stream."""
