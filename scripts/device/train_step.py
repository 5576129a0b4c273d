"""A real training step for the GPU check: a small MLP fitted to a fixed synthetic task.

Runs as a Gridwork task: items [GRIDWORK_ITEM_START, GRIDWORK_ITEM_END) are seeds; for each,
200 Adam steps on the GPU over batches that a data loader with two worker processes serves
(they hand tensors over in /dev/shm, as real training input pipelines do), then the final
loss and a checksum of the weights go to $GRIDWORK_OUTPUTS/seed-N.txt as numbers, so a
council checks them with numeric_tolerance.
"""
import os
import sys

import torch

start = int(os.environ.get("GRIDWORK_ITEM_START", "0"))
end = int(os.environ.get("GRIDWORK_ITEM_END", "1"))
out = os.environ.get("GRIDWORK_OUTPUTS", ".")
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to this task")
dev = torch.device("cuda")
print("device", torch.cuda.get_device_name(0), flush=True)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
for seed in range(start, end):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8192, 256, generator=g).to(dev)
    w_true = torch.randn(256, 1, generator=g).to(dev)
    y = torch.tanh(x @ w_true)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 1)
    ).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = torch.utils.data.TensorDataset(x.cpu(), y.cpu())
    loader = torch.utils.data.DataLoader(data, batch_size=2048, num_workers=2, persistent_workers=True)
    step = 0
    while step < 200:
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(xb.to(dev)), yb.to(dev))
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        loss = torch.nn.functional.mse_loss(model(x), y)
        checksum = sum(float(p.double().abs().sum()) for p in model.parameters())
    line = f"seed {seed} loss {loss.item():.9e} weights_abs_sum {checksum:.9e}\n"
    print(line, end="", flush=True)
    with open(os.path.join(out, f"seed-{seed}.txt"), "w") as f:
        f.write(line)
