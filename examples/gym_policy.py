"""Train a gymnasium policy with OpenAI-ES: the fitness is the episode return, played on the workers.

    python examples/gym_policy.py [--env CartPole-v1] [--generations 100] [--normalize]

--normalize: the policy sees observations normalized by running statistics (Salimans et al. 2017); the
policy you get back holds them, so it still takes raw observations.
"""
import argparse

import evoplat

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--generations", type=int, default=100)
    p.add_argument("--eval-episodes", type=int, default=100)
    p.add_argument("--run-dir", default="runs/gym_policy")
    p.add_argument("--normalize", action="store_true", help="observation normalization")
    args = p.parse_args()
    result = evoplat.run({
        "algorithm": "es",
        "model": {"name": "mlp", "hidden": [16]},                      # any registered model is a policy
        "fitness": {"name": "gym", "kwargs": {"env": args.env, "episodes": 1,
                                              "eval_episodes": args.eval_episodes,
                                              "observation_normalization": args.normalize}},
        "es": {"generations": args.generations, "popsize": 64, "sigma": 0.1, "lr": 0.05, "weight_decay": 0.0},
        "run": {"eval_every": 5, "target_metric": "test_return", "target_value": 475},
        "runtime": {"num_workers": 2}}, run_dir=args.run_dir, overwrite=True)
    s = result.summary

    # The trained policy is a plain torch module: play one more episode with it, outside evoplat.
    import gymnasium as gym
    import numpy as np
    import torch
    policy, env = result.model(), gym.make(args.env)
    obs, _ = env.reset(seed=12345)
    total, done = 0.0, False
    while not done:
        with torch.no_grad():
            out = policy(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
        discrete = isinstance(env.action_space, gym.spaces.Discrete)
        action = int(out.argmax()) if discrete else np.clip(out, env.action_space.low, env.action_space.high)
        obs, reward, terminated, truncated, _ = env.step(action)
        total, done = total + float(reward), terminated or truncated
    print(f"the loaded policy, one more episode: return {total:.1f}")
    print(f"mean return {s['test_return']:.1f} over {args.eval_episodes} episodes after {s['steps']} "
          f"generations ({s['stopped']})")
