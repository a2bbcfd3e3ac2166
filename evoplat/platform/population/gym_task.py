"""A fitness that is not a supervised loss: episodes of a gymnasium environment (`fitness.name: gym`).

The policy is any registered model: observation in, one output per discrete action (the largest wins)
or one per action dimension of a Box space (clipped to its bounds). A member's fitness is its mean
return over `episodes` episodes; all members of a generation play the same episode seeds (common random
numbers, so members are compared on equal terms), keyed by (run seed, generation, episode): a member's
fitness does not depend on the worker that plays it. The members of a chunk step in lock-step, one
batched forward per time step.

    fitness: {name: gym, kwargs: {env: CartPole-v1, episodes: 1, eval_episodes: 100}}

With `observation_normalization: true` the policy sees observations normalized by the running
statistics of the members' training episodes (obs_norm.py), as in Salimans et al. (2017), seeded by
`warmup_episodes` episodes of random actions.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from pydantic import Field

from evoplat.platform.config import ConfigError, StrictModel
from evoplat.platform.population import obs_norm
from evoplat.platform.registry import FITNESS

_EVAL_SALT = 0x5EED_7E57     # evaluation episodes use seeds no training episode uses
_WARMUP_SALT = 0x0B5_5EED    # nor do the random-action episodes that seed observation statistics


def _episode_seed(seed: int, generation: int, episode: int) -> int:
    return int(np.random.SeedSequence([seed, generation, episode]).generate_state(1)[0])


class GymOptions(StrictModel):
    """`fitness.kwargs` of the gym fitness: checked with the rest of the config, listed by `evoplat options`."""

    env: str = Field("CartPole-v1", description="gymnasium environment id (MuJoCo ones need gymnasium[mujoco]).")
    episodes: int = Field(1, ge=1, description="Episodes each member plays per generation; its fitness is their "
                                               "mean return.")
    eval_episodes: int = Field(100, ge=1, description="Fixed evaluation episodes of the center at each evaluation.")
    max_episode_steps: Optional[int] = Field(None, ge=1, description="Step limit per episode; null: the "
                                                                     "environment's own.")
    env_kwargs: dict = Field({}, description="Keyword arguments passed to gymnasium.make.")
    observation_normalization: bool = Field(False, description="The policy sees observations normalized by the "
                                                               "running statistics of the members' training "
                                                               "episodes (Salimans et al. 2017).")
    obs_clip: float = Field(5.0, gt=0, description="Normalized observations are clipped to [-obs_clip, obs_clip].")
    warmup_episodes: int = Field(10, ge=0, description="With observation_normalization: episodes of uniformly "
                                                       "random actions whose observations seed the statistics "
                                                       "before the first generation (0: none; then they come only "
                                                       "from the initial policy's own episodes, which on CartPole "
                                                       "all fall the same way and can lock the policy into that: "
                                                       "BENCHMARKS.md).")


@FITNESS.register("gym")
class GymTask:

    accepts_chunks = True      # member_fitness takes a MemberChunk (members.py) as well as [K, P]
    options = GymOptions

    def __init__(self, cfg, data_root: Optional[str] = None, device="cpu", **options):
        import gymnasium as gym
        o = GymOptions(**options)
        self.gym, self.cfg, self.device = gym, cfg, torch.device(device)
        self.env_id, self.env_kwargs = o.env, dict(o.env_kwargs)
        self.episodes, self.eval_episodes, self.max_steps = o.episodes, o.eval_episodes, o.max_episode_steps
        self.warmup_episodes = o.warmup_episodes
        probe = self._make()
        obs_space, act_space = probe.observation_space, probe.action_space
        probe.close()
        self.discrete = isinstance(act_space, gym.spaces.Discrete)
        self.input_shape = tuple(obs_space.shape)
        self.num_outputs = int(act_space.n) if self.discrete else int(np.prod(act_space.shape))
        if not self.discrete:
            self.low, self.high = act_space.low, act_space.high
        self._envs: list = []
        # the normalizer the policy looks through (None: raw observations) and each member's sums
        self.normalizer = obs_norm.ObservationNormalizer(self.input_shape, o.obs_clip) \
            if o.observation_normalization else None
        self._member_rows: list = []

    @staticmethod
    def policy_network(model, input_shape: tuple, **options):
        """The network a run exports: the policy, behind an ObservationNormalizer if the run normalizes."""
        o = GymOptions(**options)
        if not o.observation_normalization:
            return model
        return torch.nn.Sequential(obs_norm.ObservationNormalizer(input_shape, o.obs_clip), model)

    # -- the running state (observation statistics) the ES driver keeps and ships each generation ----
    def initial_state(self) -> Optional[dict]:
        """The statistics before the first generation: those of `warmup_episodes` random-action episodes,
        keyed by the run seed."""
        if self.normalizer is None:
            return None
        stats = obs_norm.empty_stats(self.input_shape)
        if not self.warmup_episodes:
            return stats
        rows, env = obs_norm.member_rows(1, self.input_shape), self._make()
        env.action_space.seed(_episode_seed(self.cfg.seed ^ _WARMUP_SALT, 0, self.warmup_episodes))
        for e in range(self.warmup_episodes):
            obs, _ = env.reset(seed=_episode_seed(self.cfg.seed ^ _WARMUP_SALT, 0, e))
            done = False
            while not done:
                obs_norm.accumulate(rows, np.zeros(1, dtype=int), np.asarray(obs, np.float32)[None])
                obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
                done = terminated or truncated
        env.close()
        return obs_norm.merge(stats, rows)

    def load_state(self, state: Optional[dict]) -> None:
        """Act through the normalization of `state` (statistics up to the generation before)."""
        if self.normalizer is not None and state is not None:
            mean, std = obs_norm.mean_std(state, self.input_shape)
            self.normalizer.mean.copy_(torch.from_numpy(mean))
            self.normalizer.std.copy_(torch.from_numpy(std))

    def take_member_stats(self) -> Optional[np.ndarray]:
        """The observation sums of the members scored since the last call, in member order."""
        rows, self._member_rows = self._member_rows, []
        return np.concatenate(rows) if rows else None

    def merge_state(self, state: dict, rows: np.ndarray) -> dict:
        return obs_norm.merge(state, rows)

    def export_network(self, model):
        """policy_network with the statistics this task acts through."""
        if self.normalizer is None:
            return model
        net = self.policy_network(model, self.input_shape, observation_normalization=True,
                                  obs_clip=self.normalizer.clip)
        net[0].load_state_dict(self.normalizer.state_dict())
        return net

    def _make(self):
        try:
            return self.gym.make(self.env_id, max_episode_steps=self.max_steps, **self.env_kwargs)
        except Exception as err:  # unknown id, missing extra (mujoco, box2d), bad kwargs
            raise ConfigError(f"config error: fitness.kwargs.env: gymnasium cannot make '{self.env_id}': "
                             f"{str(err).splitlines()[0]}") from None

    def _env_pool(self, n: int) -> list:
        while len(self._envs) < n:
            self._envs.append(self._make())
        return self._envs[:n]

    def _actions(self, logits: torch.Tensor) -> np.ndarray:
        if self.discrete:
            return logits.argmax(-1).cpu().numpy()
        return np.clip(logits.cpu().numpy(), self.low, self.high)

    def play(self, policy, n: int, seed: int, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """Returns of `n` policies playing one episode each from reset seed `seed` (lock-step); with
        `rows`, each policy's observations are added to its row (obs_norm.member_rows)."""
        envs = self._env_pool(n)
        obs = np.stack([e.reset(seed=seed)[0] for e in envs]).astype(np.float32)
        returns, alive = np.zeros(n), np.ones(n, dtype=bool)
        while alive.any():
            if rows is not None:
                live = np.flatnonzero(alive)
                obs_norm.accumulate(rows, live, obs[live])
            x = torch.from_numpy(obs)
            if self.normalizer is not None:
                x = self.normalizer(x)
            x = x.to(self.device).unsqueeze(1)                               # [n, 1, obs...]
            actions = self._actions(policy(x)[:, 0])
            for i in np.flatnonzero(alive):
                o, r, terminated, truncated, _ = envs[i].step(actions[i])
                returns[i] += r
                obs[i] = o
                alive[i] = not (terminated or truncated)
        return returns

    def member_fitness(self, forward, thetas, generation: int) -> torch.Tensor:
        """Mean return of each member; `thetas` is [K, P] or a MemberChunk (materialised here: each
        member steps on its own observations, so no input is shared)."""
        if not isinstance(thetas, torch.Tensor):
            thetas = thetas.materialize()
        total = np.zeros(thetas.shape[0])
        rows = obs_norm.member_rows(thetas.shape[0], self.input_shape) if self.normalizer is not None else None
        for e in range(self.episodes):
            total += self.play(lambda x: forward.member_logits(thetas, x), thetas.shape[0],
                               _episode_seed(self.cfg.seed, generation, e), rows)
        if rows is not None:
            self._member_rows.append(rows)
        return torch.from_numpy(total / self.episodes).float()

    @torch.no_grad()
    def evaluate(self, model, generation: int) -> dict:
        """Mean and spread of the return of `model` over `eval_episodes` fixed evaluation episodes."""
        model.eval()
        returns = [self.play(lambda x: model(x[:, 0]).unsqueeze(1), 1,
                             _episode_seed(self.cfg.seed ^ _EVAL_SALT, 0, e))[0]
                   for e in range(self.eval_episodes)]
        return {"test_return": float(np.mean(returns)), "test_return_std": float(np.std(returns)),
                "test_return_min": float(np.min(returns))}
