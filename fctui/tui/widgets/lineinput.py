"""A one-line text input whose editing keys keep their place among the keys typed around them.

Textual runs a widget's own key bindings (ctrl+u, backspace, ctrl+w, arrows) only after the key has
bubbled up to the app, while printable keys are inserted at once. When one terminal write carries both
(a paste, tmux send-keys, a fast typist over ssh), "ctrl+u then verdict:ready" inserted the text first
and then deleted everything left of the cursor, text included (issue 15 bug 9). Here the input runs its
own bindings when the key reaches it, in order.
"""

from __future__ import annotations

from textual import events
from textual.widgets import Input


class LineInput(Input):
    async def _on_key(self, event: events.Key) -> None:
        # The input's own bindings as the screen resolves them (with the keymap applied); priority
        # bindings were already handled by the app before the key was forwarded here.
        for node, bindings in self.screen._modal_binding_chain:
            if node is not self:
                continue
            for binding in bindings.key_to_bindings.get(event.key, ()):
                if not binding.priority and await self.app.run_action(binding.action, self):
                    event.stop()
                    event.prevent_default()
                    return
        await super()._on_key(event)
