"""16 concepts x 2 seeds from SEED: CONDITIONS (comma-separated) with NEGATIVES training negatives."""
import json, sys, time
import torch
from engine.inference.assistant import Assistant
from engine.microworld.benchmark import BenchSettings, run_seeds
from engine.microworld.reader import load_reader
from engine.model.loading import load_model

torch.set_num_threads(2)
negatives, conditions, seed = int(sys.argv[1]), tuple(sys.argv[2].split(",")), int(sys.argv[3])
settings = BenchSettings(concepts=16, seed=seed, train_negatives=negatives, conditions=conditions)
started = time.monotonic()
results, _ = run_seeds(Assistant(load_model("demo", device="cpu")), load_reader(), settings, 2, print)
results["command"] = "python /tmp/neg200/run2.py " + " ".join(sys.argv[1:])
json.dump(results, open(f"/tmp/neg200/seed{seed}_neg{negatives}.json", "w"), indent=1)
print("done", time.monotonic() - started)
