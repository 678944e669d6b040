-- Generation jobs (task_kind `generation`): the character error rate of student and teacher next to
-- exact match (stored in student_accuracy / teacher_accuracy). NULL for classification.
ALTER TABLE distill_results ADD COLUMN student_cer DOUBLE PRECISION;
ALTER TABLE distill_results ADD COLUMN teacher_cer DOUBLE PRECISION;
