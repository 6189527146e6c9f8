"""The Hugging Face Hub: pushing an adapter or merged model with its card, results and recipe."""
