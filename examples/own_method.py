"""Your own method on evoplat's loop: a config section, a Trainer, and a name. The loop gives it resume,
checkpoints, evaluation cadence, best-so-far, stopping rules, metrics.parquet and Ray Tune for free.

Here: a (1+1) hill climber with a step-size rule, on the platform's data and models.
    python examples/own_method.py [--steps 200]
"""
import argparse

import torch
import torch.nn.functional as F
from pydantic import Field

import evoplat
from evoplat.platform.backprop import evaluate_splits
from evoplat.platform.config import StrictModel
from evoplat.platform.data import minibatch_indices
from evoplat.platform.population.forward import ParamLayout


class HillClimbConfig(StrictModel):
    steps: int = Field(200, ge=1, description="Candidates tried.")
    sigma: float = Field(0.05, gt=0, description="Initial mutation std.")
    batch_size: int = Field(256, ge=1, description="Examples each comparison sees.")


@evoplat.register_method("hill_climb")
class HillClimb(evoplat.Trainer):
    config_class = HillClimbConfig
    unit = "candidate"
    default_eval_every = 20
    budget_option = "steps"          # hill_climb.steps counts the run's steps

    def setup(self):
        self.data, self.model = self.data_and_model()
        self.layout = ParamLayout(self.model)
        self.theta, self.sigma = self.layout.flatten(self.model), self.section.sigma

    def loss(self, theta, x, y):
        self.layout.load_into(self.model, theta)
        with torch.no_grad():
            return F.cross_entropy(self.model(x), y).item()

    def step(self):
        idx = minibatch_indices(len(self.data.x_train), self.section.batch_size, self.cfg.seed, self.steps_done)
        x, y = self.data.x_train[idx], self.data.y_train[idx]
        noise = torch.randn(self.theta.shape, generator=torch.Generator().manual_seed(self.steps_done))
        parent, child = self.theta, self.theta + self.sigma * noise
        better = self.loss(child, x, y) < self.loss(parent, x, y)
        self.theta = child if better else parent
        self.sigma *= 1.5 if better else 1.5 ** -0.25        # the 1/5th success rule
        self.layout.load_into(self.model, self.theta)
        return {"accepted": int(better), "sigma": self.sigma, "train_loss": self.loss(self.theta, x, y)}

    def evaluate(self):
        return evaluate_splits(self.model, self.data, self.cfg.run.eval_batch_size)

    def state_dict(self):
        return {"theta": self.theta.clone(), "sigma": self.sigma}

    def load_state_dict(self, state):
        self.theta, self.sigma = state["theta"], float(state["sigma"])


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--run-dir", default="runs/own_method")
    args = p.parse_args()
    result = evoplat.run({"algorithm": "hill_climb", "hill_climb": {"steps": args.steps},
                          "data": {"source": "synthetic", "val_size": 64}, "model": {"name": "mlp", "hidden": [16]}},
                         run_dir=args.run_dir, overwrite=True)
    print(f"test accuracy {100 * result.summary['test_acc']:.1f}% after {result.summary['steps']} candidates")
