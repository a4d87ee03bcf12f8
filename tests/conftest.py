import torch

# TEMPORARY while the teaching VLM trains in the background on this 2-core machine
torch.set_num_threads(1)
