"""OCR: text-line recognition (a CRNN trained with CTC) on the one engine."""
