"""Model component: text preprocessing, data, losses, network, training and evaluation."""
