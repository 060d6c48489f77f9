"""Starter files of the exercises: what ``minis2s exercise show N`` writes."""
