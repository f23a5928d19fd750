"""Application users for locust: chat completions through the gateway, with feedback.

Each request comes from one end user of a fixed population, named in
`x-rollgate-key`, so the gateway's sticky split keeps that user on one variant
for the whole run. A share of requests stream. After an answer a share of users
score it by a fixed rubric (`answers.rubric_score`: they prefer the brand voice)
through `/v1/feedback`, with the answer's `x-rollgate-feedback-token`. Locust's
statistics are kept per variant: each request is named after the variant the
gateway says answered it (`x-rollgate-variant`, shown to keys with the debug
scope; `-` otherwise), e.g. `chat [acme-voice]` and `stream [base]`; a streamed
request's time runs to the end of the stream, not to its first byte.

Client API keys: `ROLLGATE_KEYS` (or `--keys`) holds comma-separated keys, as
`rollgate keys create NAME --tenant T --scope debug` prints them; end user i
calls with key i mod their number, answers and scores alike. Give keys of at
least three tenants: the satisfaction check counts no tenant for more than half
its evidence, so one tenant's scores cannot promote a rollout. Without keys the
users send no `authorization` (a gateway with `ROLLGATE_AUTH=none`).

    ROLLGATE_KEYS=rg-...,rg-...,rg-... locust -f loadtests/locustfile.py \\
        --config loadtests/profiles/headless.conf --host http://127.0.0.1:8080

Profiles: `profiles/headless.conf` (tests, the demo: a few users, no web UI) and
`profiles/gpu-cluster.conf` (a real GPU deployment behind the gateway).
"""

from __future__ import annotations

import random
import time

from locust import HttpUser, between, events, task

from loadtests.answers import answer_text, rubric_score, streamed_text
from serving.corpus import examples

# Held-out prompts: the adapters never saw them in training.
PROMPTS = tuple(e.prompt for e in examples(held_out=True))


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    group = parser.add_argument_group("rollgate")
    group.add_argument("--route", default="support", help="the route (model) users ask")
    group.add_argument("--population", type=int, default=5000, help="distinct user keys")
    group.add_argument("--stream-share", type=float, default=0.3, help="share that streams")
    group.add_argument("--feedback-share", type=float, default=0.5, help="share that scores")
    group.add_argument("--max-tokens", type=int, default=24)
    group.add_argument("--temperature", type=float, default=0.0)
    group.add_argument(
        "--keys",
        default="",
        env_var="ROLLGATE_KEYS",
        help="client API keys, comma-separated: user i calls with key i mod their number",
    )


def bearer_keys(keys: str) -> list[str]:
    """The `authorization` values of comma-separated client keys, blanks skipped."""
    return [f"Bearer {k.strip()}" for k in keys.split(",") if k.strip()]


class ChatUser(HttpUser):
    wait_time = between(0.0, 0.2)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.rng = random.Random()
        self.bearers = bearer_keys(options.keys)

    def auth(self, user: int) -> dict[str, str]:
        """The end user's key: user i calls with key i mod their number."""
        return {"authorization": self.bearers[user % len(self.bearers)]} if self.bearers else {}

    @task
    def chat(self) -> None:
        options = self.environment.parsed_options
        stream = self.rng.random() < options.stream_share
        body = {
            "model": options.route,
            "messages": [{"role": "user", "content": self.rng.choice(PROMPTS)}],
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "stream": stream,
        }
        user = self.rng.randrange(options.population)
        auth = self.auth(user)
        kind = "stream" if stream else "chat"
        with self.client.post(
            "/v1/chat/completions",
            json=body,
            headers={"x-rollgate-key": f"user-{user}", **auth},
            stream=stream,
            catch_response=True,
            name=kind,
        ) as response:
            meta = response.request_meta
            meta["name"] = f"{kind} [{response.headers.get('x-rollgate-variant', '-')}]"
            if stream:
                text = streamed_text(list(response.iter_lines(decode_unicode=True)))
                meta["response_time"] = (time.time() - meta["start_time"]) * 1000
            else:
                text = answer_text(response.text)
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            request_id = response.headers.get("x-request-id")
            token = response.headers.get("x-rollgate-feedback-token")
        if request_id and token and self.rng.random() < options.feedback_share:
            body = {"request_id": request_id, "score": rubric_score(text), "token": token}
            self.client.post("/v1/feedback", json=body, headers=auth, name="feedback")
